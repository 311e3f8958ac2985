"""Deny globs, git style, expanded to the paths they match on this host right now.

``**`` spans any number of directories; ``*``, ``?`` and ``[...]`` stay within one name and match
dotfiles too (a ``.secret.pem`` is as secret as ``secret.pem``). Symlinked directories are not
followed. Every backend masks exactly what :func:`expand` returns, so bwrap and Landlock can never
disagree on what a glob covers; Seatbelt matches a regex built from the same :func:`name_tokens`.
Files that appear after launch are not covered on Linux (nor on Windows).

:func:`validate` is the one judge of a glob: the hosts (binding, every backend) refuse what it
refuses rather than run unmasked, and the playbook loader asks it with ``strict=True`` so that a
playbook is refused at load for anything some host would refuse or read otherwise than written.
"""

from __future__ import annotations

import ntpath
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:  # expansion reads the host through binding's view; the grammar needs nothing
    from sandfleet_agent.binding.hostfs import FsView

#: Beyond this many matches a deny glob is refused: each match costs a mount or a grant split.
MAX_GLOB_MATCHES = 10_000
#: Beyond this many directory entries scanned, a deny glob is refused rather than stalling the task.
MAX_GLOB_SCAN = 500_000
GLOB_MAGIC = re.compile(r"[*?[]")
#: What a glob may hold, for the messages that refuse one.
GLOB_SYNTAX = ("* (within a name)", "** (any directories)", "? (one character)",
               "[abc] [a-z] [!a-z] (a class of printable ASCII other than '\\' and '[')")


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
    regex = _compile(rest, pattern, re.IGNORECASE if windows else 0)
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


def validate(pattern: str, strict: bool = False) -> None:
    """Raise :class:`GlobError` saying what is wrong when ``pattern`` cannot be compiled (a NUL, a
    reversed range ``[z-a]``), so that a bad glob is refused where it is written or, sent by
    another controller, refused by the host instead of failing the agent.

    ``strict`` (the playbook loader) also refuses what some host would refuse or read otherwise
    than written: a class holding a character Seatbelt's POSIX brackets cannot hold
    (:func:`unholdable`), a ``[`` never closed (hosts read it as a literal ``[``, as Codex does,
    but the writer meant a class) and a trailing ``\\`` (a separator on Windows, part of the
    name elsewhere). Hosts stay lenient there so older playbooks keep their meaning."""
    if "\0" in pattern:
        raise GlobError(f"deny glob {pattern!r} contains a NUL character")
    if strict and pattern.endswith("\\"):
        raise GlobError(f"deny glob {pattern!r} ends with '\\', which is a separator on Windows and part of the "
                        "name elsewhere; separate with '/' and end with a name")
    parts = [p for p in pattern.split("/") if p and p != "."]
    for part in parts:
        for tok in name_tokens(part):
            _check_token(tok, part, pattern, strict)
    _compile(parts, pattern)


def unholdable(body: str) -> Optional[str]:
    """The first character of a class body that not every host's matcher can hold literally
    (Seatbelt's POSIX brackets take no escapes, and match bytes): ``\\``, ``[``, non-ASCII,
    controls; ``None`` when there is none."""
    return next((c for c in body if c in "\\[" or not c.isascii() or not c.isprintable()), None)


def _check_token(tok: NameToken, name: str, pattern: str, strict: bool) -> None:
    if strict and tok.kind == "unclosed":
        raise GlobError(f"deny glob {pattern!r}: the '[' in {name!r} opens a class that no ']' closes (a ']' "
                        "right after '[' or '[!' belongs to the class, so '[]' is not an empty one); close it, "
                        "or write '?' for a literal '['")
    if tok.kind != "class":
        return
    bad = unholdable(tok.text) if strict else None
    if bad is not None:
        raise GlobError(f"deny glob {pattern!r}: the class [{tok.text}] holds {bad!r}, which not every host "
                        "can match (Seatbelt's classes take no escapes and match bytes)")
    try:
        re.compile(_python_class(tok))
    except re.error as exc:
        raise GlobError(f"deny glob {pattern!r}: the class [{tok.text}] is not valid: {exc.msg} (a range "
                        "runs from the lower character to the higher, as in [a-z])") from None


def _compile(parts: list[str], pattern: str, flags: int = 0) -> re.Pattern[str]:
    """The engine's regex for ``parts``; a pattern it cannot compile is a :class:`GlobError`
    (never a bare ``re.error`` escaping into the agent)."""
    try:
        return re.compile(_glob_regex(parts), flags)
    except re.error as exc:
        raise GlobError(f"deny glob {pattern!r} cannot be compiled: {exc.msg}") from None


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
    ``class`` (a closed ``[...]``; ``text`` is its body), ``literal`` (``text``) or ``unclosed``
    (a ``[`` no ``]`` closes: matched as the literal ``[``, as Codex does, but refused by a strict
    :func:`validate`). Shared by every translation (Python regex here, Seatbelt's POSIX regex) so
    they cannot read a glob differently."""

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
                yield NameToken("unclosed", c)
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
