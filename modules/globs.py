"""Deny globs, git style, expanded to the paths they match on this host right now.

``**`` spans any number of directories; ``*``, ``?`` and ``[...]`` stay within one name and match
dotfiles too (a ``.secret.pem`` is as secret as ``secret.pem``). Symlinked directories are not
followed. Every backend masks exactly what :func:`expand` returns, so bwrap and Landlock can never
disagree on what a glob covers. Files that appear after launch are not covered on Linux.
"""

from __future__ import annotations

import posixpath
import re

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
    longest leading part without glob characters."""
    parts = [p for p in posixpath.normpath(pattern).split("/") if p]
    literal = 0
    while literal < len(parts) and not GLOB_MAGIC.search(parts[literal]):
        literal += 1
    anchor = "/" + "/".join(parts[:literal])
    rest = parts[literal:]
    if not rest:
        return [fs.realpath(anchor)] if fs.kind(anchor) is not None else []
    if anchor == "/":
        raise GlobError(f"deny glob {pattern} would scan the whole filesystem; anchor it under a directory")
    regex = re.compile(_glob_regex(rest))
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
            full = posixpath.join(directory, name)
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


def _name_regex(name: str) -> str:
    out, i = "", 0
    while i < len(name):
        c = name[i]
        if c == "*":
            while i + 1 < len(name) and name[i + 1] == "*":
                i += 1
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            start = i + 2 if name[i + 1:i + 2] in ("!", "^") else i + 1
            end = name.find("]", start + 1)  # a "]" right after "[" or "[!" is literal
            if end == -1:
                out += re.escape(c)
            else:
                body = name[start:end]
                chars = [ch if ch == "-" and 0 < k < len(body) - 1 and "-" not in (body[k - 1], body[k + 1])
                         else re.escape(ch) for k, ch in enumerate(body)]
                out += "[" + ("^/" if start == i + 2 else "") + "".join(chars) + "]"
                i = end
        else:
            out += re.escape(c)
        i += 1
    return out
