"""``-e/--extra-vars`` as Ansible reads them: ``k=v`` words, inline YAML/JSON, or ``@file``.

Several ``-e`` merge left to right (a later one replaces a whole top-level value, Ansible's
default ``hash_behaviour``). Values from ``k=v`` are strings, as in Ansible; typed values come
from the YAML/JSON forms. Extra vars win over every other variable. A mistake in a ``@file``
is reported at its file, line and column (exit 65, like a missing one); a malformed option is a usage error (64).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

import yaml

from sandfleet.errors import InputError, UsageError
from sandfleet.load.sandbox_spec import plain
from sandfleet.load.varnames import name_error
from sandfleet.load.yamlsrc import YMap, load_yaml_file


def parse_extra_vars(options: Sequence[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for option in options:
        merged.update(_one(option))
    return merged


def _one(option: str) -> dict[str, Any]:
    text = option.strip()
    if not text:
        return {}
    if text.startswith("@"):
        return _from_file(text[1:])
    if text[0] in "/.":
        raise UsageError(f"-e {option!r}: to read variables from a file, write -e @{text}")
    if text[0] in "{[":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"-e {option!r} is not valid YAML/JSON: {exc}".replace("\n", " ")) from None
        if not isinstance(data, dict):
            raise UsageError(f"-e {option!r} must be a mapping of variable names to values")
        return _checked(data, f"-e {option!r}")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"-e {option!r}: {exc}") from None
    out: dict[str, Any] = {}
    for word in words:
        name, eq, value = word.partition("=")
        if not eq:
            raise UsageError(f"-e {option!r}: {word!r} is not name=value (or use -e '{{\"json\": 1}}' or -e @file)")
        out[name] = value
    return _checked(out, f"-e {option!r}")


def _from_file(path: str) -> dict[str, Any]:
    if not path:
        raise UsageError("-e @ needs a file name (-e @vars.yml)")
    data = load_yaml_file(path)  # a missing or broken file is an InputError at its position
    if data is None:
        return {}
    if not isinstance(data, YMap):
        raise InputError("an extra-vars file must be a mapping of variable names to values",
                         getattr(data, "mark", None), file=path)
    for key in data:
        problem = name_error("an extra-vars key", key)
        if problem:
            raise InputError(problem, data.key_mark(key))
    out: dict[str, Any] = plain(data)
    return out


def _checked(data: dict[Any, Any], where: str) -> dict[str, Any]:
    for key in data:
        problem = name_error("an extra-vars key", key)
        if problem:
            raise UsageError(f"{where}: {problem}")
    return {str(k): v for k, v in data.items()}


__all__ = ["parse_extra_vars"]
