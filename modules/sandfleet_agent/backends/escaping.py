"""Escaping filters, one per target language a wrapper is written in.

Every value a template places into a wrapper passes through one of these; none is trusted to be
"safe already". Each is exact, not merely defensive: what the target parses back is byte for
byte what went in (tests/modules/test_escaping.py proves it with hypothesis).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from typing import Any

_SHELL_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
_DOUBLE_QUOTE_ACTIVE = re.compile(r'[$`\\"!]')


def sh(value: str) -> str:
    """POSIX shell quoting for the displayed command: ``shlex.split`` gives ``value`` back.

    Single quotes protect everything except a single quote itself. A value holding single quotes
    but nothing double quotes would interpret (``$`` `` ` `` ``\\`` ``"`` ``!``) is shown in double
    quotes, which reads better; otherwise the quote is closed, escaped and reopened. Newlines,
    ``$()``, backticks and globs are inert inside single quotes.
    """
    if value and _SHELL_SAFE.fullmatch(value):
        return value
    if "'" in value and not _DOUBLE_QUOTE_ACTIVE.search(value):
        return '"' + value + '"'
    return "'" + value.replace("'", "'\"'\"'") + "'"


def sh_join(argv: Iterable[str]) -> str:
    return " ".join(sh(a) for a in argv)


def json_str(value: Any) -> str:
    """A JSON literal. ``ensure_ascii`` keeps lone surrogates (non-UTF-8 bytes decoded with
    surrogateescape) as ``\\udcXX`` escapes, which Python's json reads back exactly."""
    return json.dumps(value, ensure_ascii=True)


def sh_split(text: str) -> list[str]:
    """The inverse of :func:`sh_join`, for tests and for reading a displayed command back."""
    return shlex.split(text)


# -- the native wrapper languages of macOS and Windows -----------------------------------------

def sbpl_str(value: str) -> str:
    """An SBPL (Seatbelt profile, a TinyScheme dialect) string literal.

    Inside ``"..."`` the reader treats only ``\\`` and ``"`` specially and keeps every other
    character, newlines included, as it is; escaping exactly those two is therefore exact. It
    matters for regexes: a bare ``\\.`` would reach the regex engine as ``.``.
    """
    if "\x00" in value:
        raise ValueError("an SBPL string cannot hold NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: What PowerShell's tokenizer takes for a single quote: ASCII ' and four typographic quotes.
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_str(value: str) -> str:
    """A PowerShell single-quoted string literal: nothing is expanded inside one (no ``$``, no
    backtick escapes), and a quote character is written twice. PowerShell takes the typographic
    quotes (U+2018..U+201B) for quotes too, so they are doubled as well; missing one is the
    classic injection into generated PowerShell."""
    return "'" + "".join(c + c if c in PS_SINGLE_QUOTES else c for c in value) + "'"


_XML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;",
                "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
# A string, not a compiled pattern: compiling this class costs ~8 ms, paid at every agent start
# although only Windows wrappers need it; ``re`` compiles and caches it on first use.
_XML_FORBIDDEN = "[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


def xml_str(value: str) -> str:
    """Text for an XML 1.0 attribute value or element content. Tab, newline and carriage return
    become character references, so attribute-value normalization cannot turn them into
    spaces. Characters XML 1.0 cannot carry at all (NUL and most C0 controls, lone surrogates,
    U+FFFE/U+FFFF) raise instead of being dropped or mangled."""
    bad = re.search(_XML_FORBIDDEN, value)
    if bad:
        raise ValueError(f"XML 1.0 cannot carry the character U+{ord(bad.group()):04X} (in {value!r})")
    return "".join(_XML_ESCAPES.get(c, c) for c in value)


_WIN_NEEDS_QUOTES = re.compile(r'[ \t\n\v"]')


def win_arg(value: str) -> str:
    """One argument (not the first) of a Windows command line, as ``CommandLineToArgvW`` and the
    Microsoft C runtime split it: backslashes are literal unless they precede a quote, where
    each pair stands for one backslash and an odd one escapes the quote."""
    if "\x00" in value:
        raise ValueError("a Windows command line cannot hold NUL")
    if value and not _WIN_NEEDS_QUOTES.search(value):
        return value
    out, backslashes = ['"'], 0
    for c in value:
        if c == "\\":
            backslashes += 1
            continue
        if c == '"':
            out.append("\\" * (2 * backslashes + 1) + '"')
        else:
            out.append("\\" * backslashes + c)
        backslashes = 0
    out.append("\\" * (2 * backslashes) + '"')
    return "".join(out)


_WIN_PROGRAM_SPACE = re.compile(r"[ \t\n\v\f\r]")


def win_program(value: str) -> str:
    """The program name, the first word of a Windows command line, which has its own rule: it
    runs to the next quote when it starts with one, else to the first white space, and no
    backslash escapes anything. A name holding a quote cannot be written at all."""
    if '"' in value or "\x00" in value:
        raise ValueError(f"a Windows program name cannot hold a double quote or NUL: {value!r}")
    return f'"{value}"' if not value or _WIN_PROGRAM_SPACE.search(value) else value


def win_cmdline(argv: Iterable[str]) -> str:
    """The command line ``CreateProcess`` gets for ``argv``; ``CommandLineToArgvW`` gives it back."""
    words = list(argv)
    if not words:
        raise ValueError("a command line needs a program")
    return " ".join([win_program(words[0]), *(win_arg(w) for w in words[1:])])
