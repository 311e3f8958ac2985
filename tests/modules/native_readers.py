"""Readers for the languages the macOS and Windows wrappers are written in, so a broken wrapper
fails a test here rather than on a Mac or a Windows machine.

Each reader follows the real one's rules, not our writer's: SBPL strings as TinyScheme reads them
(``readstrexp``: ``\\n``, ``\\t``, ``\\r``, ``\\xHH;``, and any other escaped character stands for
itself), PowerShell single-quoted strings as its tokenizer reads them (any of five quote
characters, doubled), Windows command lines as ``CommandLineToArgvW`` splits them (ported from
Wine's shell32, which matches Windows, including its quirks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

# -- SBPL ------------------------------------------------------------------------------------------


class SbplError(ValueError):
    pass


@dataclass(frozen=True)
class Sym:
    name: str


@dataclass(frozen=True)
class Str:
    value: str


Form = Union[Sym, Str, int, list["Form"]]

_ATOM_END = re.compile(r'[\s()";]')


def sbpl_parse(text: str) -> list[Form]:
    """Every top-level form of a profile; raises on unbalanced parentheses, an unterminated
    string, or syntax outside the plain subset we write (``#"..."`` regex literals, quotes)."""
    forms: list[Form] = []
    stack: list[list[Form]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c == ";":
            end = text.find("\n", i)
            i = len(text) if end == -1 else end + 1
        elif c == "(":
            stack.append([])
            i += 1
        elif c == ")":
            if not stack:
                raise SbplError(f"unbalanced ')' at offset {i}")
            done = stack.pop()
            (stack[-1] if stack else forms).append(done)
            i += 1
        elif c == '"':
            value, i = _sbpl_string(text, i + 1)
            (stack[-1] if stack else forms).append(Str(value))
        elif c in "#'`,":
            raise SbplError(f"unexpected {c!r} at offset {i}: outside the SBPL subset sandfleet writes")
        else:
            m = _ATOM_END.search(text, i)
            end = m.start() if m else len(text)
            word = text[i:end]
            atom: Form = int(word) if word.isdigit() else Sym(word)
            (stack[-1] if stack else forms).append(atom)
            i = end
    if stack:
        raise SbplError(f"{len(stack)} form(s) left open at the end")
    return forms


def _sbpl_string(text: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(text):
                break
            e = text[i + 1]
            if e in "xX":
                m = re.compile(r"[0-9a-fA-F]{1,2};?").match(text, i + 2)
                if not m:
                    raise SbplError(f"bad \\x escape at offset {i}")
                out.append(chr(int(m.group().rstrip(";"), 16)))
                i = m.end()
                continue
            out.append({"n": "\n", "t": "\t", "r": "\r"}.get(e, e))
            i += 2
            continue
        out.append(c)
        i += 1
    raise SbplError("unterminated string")


def sbpl_walk(forms: list[Form]) -> list[list[Form]]:
    """Every list form, at any depth."""
    found: list[list[Form]] = []
    todo: list[Form] = list(forms)
    while todo:
        f = todo.pop()
        if isinstance(f, list):
            found.append(f)
            todo.extend(f)
    return found


#: Seatbelt operation names (Apple's sandbox operations, as listed in the Apple Sandbox Guide and
#: used by Apple's and Codex's profiles); a misspelt one makes sandbox-exec reject the profile.
SBPL_OPERATIONS = frozenset({
    "default", "file*", "file-chroot", "file-clone", "file-ioctl", "file-issue-extension", "file-link",
    "file-map-executable", "file-mknod", "file-mount", "file-read*", "file-read-data", "file-read-metadata",
    "file-read-xattr", "file-revoke", "file-search", "file-unmount", "file-write*", "file-write-create",
    "file-write-data", "file-write-flags", "file-write-mode", "file-write-owner", "file-write-setugid",
    "file-write-times", "file-write-unlink", "file-write-xattr", "iokit*", "iokit-open", "iokit-get-properties",
    "iokit-set-properties", "ipc*", "ipc-posix*", "ipc-posix-sem", "ipc-posix-shm*", "ipc-posix-shm-read*",
    "ipc-posix-shm-read-data", "ipc-posix-shm-read-metadata", "ipc-posix-shm-write*", "ipc-posix-shm-write-create",
    "ipc-posix-shm-write-data", "ipc-posix-shm-write-unlink", "ipc-sysv*", "mach*", "mach-bootstrap", "mach-lookup",
    "mach-per-user-lookup", "mach-priv*", "mach-register", "mach-task-name", "network*", "network-bind",
    "network-inbound", "network-outbound", "process*", "process-exec", "process-exec*", "process-fork",
    "process-info*", "process-info-pidinfo", "signal", "sysctl*", "sysctl-read", "sysctl-write", "system*",
    "system-socket", "pseudo-tty", "user-preference*", "user-preference-read", "user-preference-write",
})
#: Filters whose one argument is a string (or, for path filters, ``(param "X")``).
_PATH_FILTERS = frozenset({"literal", "subpath", "prefix", "regex"})
_STRING_FILTERS = frozenset({"sysctl-name", "sysctl-name-prefix", "global-name", "local-name", "extension",
                             "iokit-registry-entry-class", "ipc-posix-name", "ipc-posix-name-prefix",
                             "ipc-posix-name-regex"})
_NETWORK_ADDRESS = re.compile(r"(\*|localhost):(\*|[1-9][0-9]{0,4})")


def _check_filter(f: Form) -> None:
    """One filter of an ``allow``/``deny`` rule, checked for its name and the shape of its arguments."""
    assert isinstance(f, list) and f and isinstance(f[0], Sym), f"not a filter: {f!r}"
    name, args = f[0].name, f[1:]
    if name in ("require-all", "require-any"):
        assert args, f
        for sub in args:
            _check_filter(sub)
    elif name == "require-not":
        assert len(args) == 1, f
        _check_filter(args[0])
    elif name in _PATH_FILTERS:
        assert len(args) == 1, f
        arg = args[0]
        if isinstance(arg, list):
            assert name != "regex" and arg[:1] == [Sym("param")], f"only a path filter takes (param ...): {f!r}"
        else:
            assert isinstance(arg, Str), f
            assert name == "regex" or arg.value.startswith("/"), f"a path literal must be absolute: {f!r}"
    elif name in _STRING_FILTERS:
        assert len(args) == 1 and isinstance(args[0], Str), f
    elif name == "target":
        assert args in ([Sym("same-sandbox")], [Sym("self")], [Sym("others")]), f
    elif name in ("remote", "local"):
        assert len(args) == 2 and isinstance(args[0], Sym) and isinstance(args[1], Str), f
        assert args[0].name in ("ip", "ip4", "ip6", "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"), f
        assert _NETWORK_ADDRESS.fullmatch(args[1].value), f"a network address is '*' or 'localhost' and a port: {f!r}"
        if args[1].value.split(":")[1] != "*":
            assert int(args[1].value.split(":")[1]) <= 65535, f
    elif name == "socket-domain":
        assert len(args) == 1 and isinstance(args[0], Sym) and args[0].name.startswith("AF_"), f
    elif name == "socket-protocol":
        assert len(args) == 1 and isinstance(args[0], int), f
    else:
        raise AssertionError(f"unknown SBPL filter {name!r} in {f!r}")


def check_profile(text: str, defines: list[str]) -> list[Form]:
    """A profile sandbox-exec would accept: ``(version 1)`` first, ``(deny default)`` next, balanced
    forms, valid strings, only ``allow``/``deny`` rules after that, each naming known operations
    and well-formed filters, every ``(param "X")`` defined by exactly one ``-DX=…`` and every
    definition used, every regex anchored and compilable. Returns the forms."""
    forms = sbpl_parse(text)
    assert forms[:2] == [[Sym("version"), 1], [Sym("deny"), Sym("default")]], \
        f"a profile starts with (version 1) (deny default), not {forms[:2]!r}"
    keys = [d[2:].split("=", 1)[0] for d in defines]
    assert all(d.startswith("-D") and "=" in d and d[2:].split("=", 1)[0] for d in defines), defines
    assert len(keys) == len(set(keys)), f"a parameter is defined twice: {keys}"
    for rule in forms[2:]:
        assert isinstance(rule, list) and rule[:1] in ([Sym("allow")], [Sym("deny")]), f"not a rule: {rule!r}"
        ops = [x for x in rule[1:] if isinstance(x, Sym)]
        assert ops and rule[1:1 + len(ops)] == ops, f"a rule names its operations first: {rule!r}"
        unknown = [op.name for op in ops if op.name not in SBPL_OPERATIONS]
        assert not unknown, f"unknown SBPL operation(s) {unknown} in {rule!r}"
        assert Sym("default") not in ops or rule == [Sym("deny"), Sym("default")], f"default is denied once: {rule!r}"
        for f in rule[1 + len(ops):]:
            _check_filter(f)
    used: set[str] = set()
    for form in sbpl_walk(forms):
        head = form[0] if form else None
        if head == Sym("param"):
            assert len(form) == 2 and isinstance(form[1], Str), form
            used.add(form[1].value)
        if head in (Sym("regex"), Sym("ipc-posix-name-regex")):
            assert len(form) == 2 and isinstance(form[1], Str), form
            pattern = form[1].value
            assert pattern.startswith("^") and "(?" not in pattern, pattern
            re.compile(pattern)
    assert used == set(keys), f"params used {sorted(used)} but defined {sorted(keys)}"
    return forms


# -- PowerShell ------------------------------------------------------------------------------------

PS_QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_read_string(text: str, i: int) -> tuple[str, int]:
    """The single-quoted string starting at ``text[i]``, as PowerShell's tokenizer reads it: a quote
    character followed by another quote character stands for the second one."""
    if text[i] not in PS_QUOTES:
        raise ValueError(f"no single-quoted string at offset {i}")
    out: list[str] = []
    i += 1
    while i < len(text):
        c = text[i]
        if c in PS_QUOTES:
            if i + 1 < len(text) and text[i + 1] in PS_QUOTES:
                out.append(text[i + 1])
                i += 2
                continue
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise ValueError("unterminated single-quoted string")


def ps_assignment(script: str, name: str) -> str:
    """The value of ``$name = '<literal>'`` (the literal may span lines); it must be the whole
    statement, so nothing after it on the line can run."""
    m = re.search(rf"^\${name} = ", script, re.M)
    if not m:
        raise ValueError(f"${name} is not assigned")
    value, end = ps_read_string(script, m.end())
    assert script[end] == "\n", f"${name}'s literal is followed by {script[end:end + 20]!r}"
    return value


# -- Windows command lines ---------------------------------------------------------------------


def command_line_to_argv(cmdline: str) -> list[str]:
    """``CommandLineToArgvW``, ported from Wine's shell32 (whose tests pin Windows' behaviour)."""
    argv: list[str] = []
    i, n = 0, len(cmdline)
    if n == 0:
        return [""]
    # The program name: up to the next quote when quoted, else up to white space; no escapes.
    if cmdline[0] == '"':
        end = cmdline.find('"', 1)
        argv.append(cmdline[1:] if end == -1 else cmdline[1:end])
        i = n if end == -1 else end + 1
    else:
        while i < n and cmdline[i] not in " \t\n\v\f\r":
            i += 1
        argv.append(cmdline[:i])
        if i < n:
            i += 1
    while i < n and cmdline[i] in " \t":
        i += 1
    if i >= n:
        return argv
    cur: list[str] = []
    qcount = bcount = 0
    while i < n:
        c = cmdline[i]
        if c in " \t" and qcount == 0:
            argv.append("".join(cur))
            cur, bcount = [], 0
            while i < n and cmdline[i] in " \t":
                i += 1
            if i >= n:
                return argv
            continue
        if c == "\\":
            cur.append(c)
            bcount += 1
            i += 1
        elif c == '"':
            if bcount % 2 == 0:
                del cur[len(cur) - bcount // 2:]
                qcount += 1
            else:
                del cur[len(cur) - bcount // 2 - 1:]
                cur.append('"')
            i += 1
            bcount = 0
            while i < n and cmdline[i] == '"':
                qcount += 1
                if qcount == 3:
                    cur.append('"')
                    qcount = 0
                i += 1
            if qcount == 2:
                qcount = 0
        else:
            cur.append(c)
            bcount = 0
            i += 1
    argv.append("".join(cur))
    return argv
