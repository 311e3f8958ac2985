"""How an error message names a wrong value and suggests the right one.

One vocabulary for every YAML document a user writes (playbooks, the inventory's
``sandfleet_policy``, the host owner's policy file), so the same mistake reads the same wherever
it is made. The wire speaks JSON and names its types in JSON's words instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def describe(value: Any) -> str:
    """How a user would name the YAML type of ``value`` ("a string", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    datetime = sys.modules.get("datetime")  # not imported here (~0.8 ms of every agent start):
    if datetime is not None and isinstance(value, datetime.date):  # no date exists without it
        return "a date"
    return f"a {type(value).__name__}"


def shown(value: Any) -> str:
    """A wrong scalar as the user wrote it (``'yes please'``, ``120``); other values by their type."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return repr(value)
    return describe(value)


def suggest(word: Any, choices: Iterable[str]) -> str:
    """``"; did you mean 'argv'?"`` when one choice is close, else ``""``."""
    import difflib  # only on a mistake: the agent starts without it

    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
