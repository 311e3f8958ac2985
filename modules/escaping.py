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
