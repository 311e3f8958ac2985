"""Ansible's reading of an INI value: a Python literal if it is one, else the text as written.

ansible-core 2.19 applies this both to inline ``host key=value`` pairs and to ``[group:vars]``
lines (its documentation still says the latter stay strings; its code and output say otherwise:
``x=5`` is the integer 5 in both places). So ``True`` is a bool, ``[1, 2]`` a list, ``010`` and
``yes`` stay strings, tuples and sets become lists, complex numbers and ``...`` become text.
"""

from __future__ import annotations

import ast
import warnings
from typing import Any


def parse_ini_value(text: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in quoted text warn on some Pythons
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _coerce(value)


def _coerce(value: Any) -> Any:
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_coerce(item) for item in value]
    if isinstance(value, dict):
        return {key: _coerce(item) for key, item in value.items()}
    if value is Ellipsis:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return value
