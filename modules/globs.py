"""Deny globs, git style, expanded to the paths they match on this host right now.

``**`` spans any number of directories; ``*``, ``?`` and ``[...]`` stay within one name and match
dotfiles too (a ``.secret.pem`` is as secret as ``secret.pem``). Symlinked directories are not
followed. Every backend masks exactly what :func:`expand` returns, so bwrap and Landlock can never
disagree on what a glob covers; Seatbelt matches a regex built from the same :func:`name_tokens`.
Files that appear after launch are not covered on Linux (nor on Windows).
"""

from __future__ import annotations

import ntpath
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

from .hostfs import FsView

#: Beyond this many matches a deny glob is refused: each match costs a mount or a grant split.
MAX_GLOB_MATCHES = 10_000
#: Beyond this many directory entries scanned, a deny glob is refused rather than stalling the task.
MAX_GLOB_SCAN = 500_000
GLOB_MAGIC = re.compile(r"[*?[]")


class GlobError(ValueError):
    """The glob cannot be expanded within bounds; the task is refused rather than left unmasked."""


def expand(pattern: str, fs: FsView) -> list[str]:
    """The existing paths ``pattern`` matches now (canonical), found by walking its anchor: the
    longest leading part without glob characters. On Windows (``fs.system``) either slash
    separates and names match ignoring case, as NTFS does."""
    windows = fs.system == "windows"
    mod = ntpath if windows else posixpath
    drive, rest_of = mod.splitdrive(mod.normpath(pattern))
    parts = [p for p in re.split(r"[\\/]" if windows else "/", rest_of) if p]
    literal = 0
    while literal < len(parts) and not GLOB_MAGIC.search(parts[literal]):
        literal += 1
    sep = "\\" if windows else "/"
    anchor = drive + sep + sep.join(parts[:literal])
    rest = parts[literal:]
    if not rest:
        return [fs.realpath(anchor)] if fs.kind(anchor) is not None else []
    if literal == 0:
        raise GlobError(f"deny glob {pattern} would scan the whole filesystem; anchor it under a directory")
    regex = re.compile(_glob_regex(rest), re.IGNORECASE if windows else 0)
    max_depth = None if "**" in rest else len(rest)
    matches: list[str] = []
    scanned = 0
    stack: list[tuple[str, str, int]] = [(anchor, "", 0)]
    while stack:
        directory, rel, depth = stack.pop()
        for name, kind in sorted(fs.scandir(directory), reverse=True):
            scanned += 1
            if scanned > MAX_GLOB_SCAN:
                raise GlobError(f"deny glob {pattern} scans more than {MAX_GLOB_SCAN} entries under "
                                f"{anchor}; narrow it")
            sub = f"{rel}/{name}" if rel else name
            full = mod.join(directory, name)
            if regex.fullmatch(sub):
                target = fs.realpath(full)
                if fs.kind(target) is not None:
                    matches.append(target)
                if len(matches) > MAX_GLOB_MATCHES:
                    raise GlobError(f"deny glob {pattern} matches more than {MAX_GLOB_MATCHES} paths; "
                                    "narrow it or deny their directory instead")
                continue  # a masked directory hides everything below it
            if kind == "dir" and (max_depth is None or depth + 1 < max_depth):
                stack.append((full, sub, depth + 1))
    return matches


def validate(pattern: str) -> None:
    """Raise :class:`GlobError` when ``pattern`` cannot be compiled (a reversed range ``[z-a]``
    ...), so a bad glob is refused where it is written, not when a host first expands it."""
    parts = [p for p in re.split(r"[\\/]", pattern) if p and p not in (".",)]
    try:
        re.compile(_glob_regex(parts))
    except re.error as exc:
        raise GlobError(f"deny glob {pattern!r} is not valid: {exc}") from None


def _glob_regex(parts: list[str]) -> str:
    """Git-style: ``**`` spans any number of directories, ``*``/``?``/``[..]`` stay within one
    name and match dotfiles too."""
    out = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out += ".*" if last else "(?:[^/]+/)*"
        else:
            out += _name_regex(part) + ("" if last else "/")
    return out


@dataclass(frozen=True)
class NameToken:
    """One piece of a glob's name: ``star`` (any run within the name), ``one`` (one character),
    ``class`` (a closed ``[...]``; ``text`` is its body) or ``literal`` (``text``). Shared by every
    translation (Python regex here, Seatbelt's POSIX regex) so they cannot read a glob differently."""

    kind: str
    text: str = ""
    negated: bool = False


def name_tokens(name: str) -> Iterator[NameToken]:
    i = 0
    while i < len(name):
        c = name[i]
        if c == "*":
            while i + 1 < len(name) and name[i + 1] == "*":
                i += 1
            yield NameToken("star")
        elif c == "?":
            yield NameToken("one")
        elif c == "[":
            negated = name[i + 1:i + 2] in ("!", "^")
            start = i + 2 if negated else i + 1
            end = name.find("]", start + 1)  # a "]" right after "[" or "[!" is literal
            if end == -1:
                yield NameToken("literal", c)
            else:
                yield NameToken("class", name[start:end], negated)
                i = end
        else:
            yield NameToken("literal", c)
        i += 1


def name_regex(name: str, literal: Callable[[str], str], bracket: Callable[[NameToken], str]) -> str:
    """A glob name as a regex; ``*`` and ``?`` read the same in Python's and POSIX's dialects, the
    caller says how its dialect writes literals and classes."""
    return "".join("[^/]*" if t.kind == "star" else "[^/]" if t.kind == "one"
                   else bracket(t) if t.kind == "class" else literal(t.text) for t in name_tokens(name))


def _name_regex(name: str) -> str:
    return name_regex(name, re.escape, _python_class)


def _python_class(tok: NameToken) -> str:
    body = tok.text
    chars = [ch if ch == "-" and 0 < k < len(body) - 1 and "-" not in (body[k - 1], body[k + 1])
             else re.escape(ch) for k, ch in enumerate(body)]
    return "[" + ("^/" if tok.negated else "") + "".join(chars) + "]"
