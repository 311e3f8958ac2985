"""Defaults without repeating flags: the config file and the ``SANDFLEET_*`` variables.

Each setting is named like its long flag (``--host-key-policy`` is ``host_key_policy:`` and
``SANDFLEET_HOST_KEY_POLICY``) and takes the first of: the command line, the environment, the
config file, the built-in default. One config file is read, the first found of
``$SANDFLEET_CONFIG``, ``./sandfleet.yml`` and ``~/.config/sandfleet/config.yml`` (as Ansible
reads the first of ``$ANSIBLE_CONFIG``, ``./ansible.cfg``, ``~/.ansible.cfg``); the others are
ignored, never merged, so what a run uses is always one file you can open.

Why a config file cannot loosen everything: ``./sandfleet.yml`` is read without being asked for,
and whoever can write the checkout wrote it (a cloned repository's author; a task sandboxed with
a writable workspace). Such a file, and a user's file that someone else owns or can write, is
*untrusted*: it may not set ``host_key_policy: accept-new`` (record any new host key unchecked),
and its ``inventory`` (which names the machines and carries the operator's ``sandfleet_policy``)
and ``ssh_config`` (which says where a name connects, as whom, through which jump host) must lie
inside its own folder. ``policy:`` only ever narrows (docs/architecture.md §7), so it may point
anywhere. The README's "Defaults: sandfleet.yml and SANDFLEET_*" says the same for users.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sandfleet.errors import InputError, Mark, UsageError
from sandfleet.load.sandbox_spec import check_keys
from sandfleet.load.yamlsrc import YList, YMap, load_yaml_file
from sandfleet_agent.paths import at_or_below
from sandfleet_agent.portable.words import describe, shown

#: Every setting, in the order ``sandfleet config`` prints them.
KEYS = ("inventory", "forks", "host_key_policy", "policy", "format", "ssh_config")
CHOICES = {"host_key_policy": ("reject", "accept-new"), "format": ("text", "json")}  # = the flags' choices
#: What applies when nothing gives a setting (``None``: the run's own default: 20 forks, no
#: ``--policy`` layer, ``~/.ssh/config``; no inventory at all).
DEFAULTS: Mapping[str, Any] = {"inventory": None, "forks": None, "host_key_policy": "reject", "policy": None,
                               "format": "text", "ssh_config": None}
CONFIG_VAR = "SANDFLEET_CONFIG"
PROJECT_FILE = "sandfleet.yml"
USER_FILE = Path(".config", "sandfleet", "config.yml")  # under the home folder
#: The SANDFLEET_INVENTORY separator: a comma, as ANSIBLE_INVENTORY (os.pathsep would be ';' on Windows).
INVENTORY_SEPARATOR = ","
HINTS = {"limit": "a standing limit would silently skip hosts on every run; give -l/--limit on the command line",
         "slice": "a standing slice would silently skip most hosts on every run; give --slice on the command line "
                  "(--slice auto reads the job engine's own variables)"}


def env_var(key: str) -> str:
    return f"SANDFLEET_{key.upper()}"


@dataclass(frozen=True)
class Setting:
    """One effective value and where it came from: ``command line``, ``SANDFLEET_FORKS``,
    ``/path/sandfleet.yml:2`` or ``default``."""

    value: Any
    source: str


@dataclass(frozen=True)
class ConfigFile:
    """The one config file read: its settings, and whether it may loosen (see the module doc)."""

    path: str
    chosen_by: str  # "SANDFLEET_CONFIG", "current directory" or "home"
    untrusted: Optional[str]  # why not, or None when only its owner can have written it
    settings: Mapping[str, Setting] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """Every setting's effective value, and the file and the ignored candidates behind them."""

    values: Mapping[str, Setting]
    file: Optional[ConfigFile]
    ignored: tuple[str, ...]

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def to_json(self) -> dict[str, Any]:
        return {"config_file": self.file.path if self.file else None, "ignored": list(self.ignored),
                "settings": {k: {"value": s.value, "source": s.source} for k, s in self.values.items()}}

    def text(self) -> str:
        width = min(32, max(len(f"{k} = {_text(s.value)}") for k, s in self.values.items()))
        lines = [f"{f'{k} = {_text(s.value)}':<{width}}  ({s.source})" for k, s in self.values.items()]
        lines.append(f"# config file: {self.file.path if self.file else 'none'}"
                     + (f" ({self.file.chosen_by})" if self.file else ""))
        lines.extend(f"# ignored: {path} (only the first config file found is read)" for path in self.ignored)
        return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value) if isinstance(value, list) else str(value)


def resolve(flags: Mapping[str, Any], env: Mapping[str, str], cwd: Path, home: Path) -> Settings:
    """The effective settings: ``flags`` (the command line's values, ``None`` when not given) over
    the environment over the config file over the defaults. A bad variable is a
    :class:`UsageError` naming it (exit 64); a bad file an :class:`InputError` at its position."""
    path, chosen_by, ignored = find_config(env, cwd, home)
    file = load_config(path, chosen_by) if path else None
    from_env = environment(env, cwd)
    values: dict[str, Setting] = {}
    for key in KEYS:
        if flags.get(key) is not None:
            values[key] = Setting(flags[key], "command line")
        elif key in from_env:
            values[key] = from_env[key]
        elif file and key in file.settings:
            values[key] = file.settings[key]
        else:
            values[key] = Setting(DEFAULTS[key], "default")
    return Settings(values, file, ignored)


def find_config(env: Mapping[str, str], cwd: Path, home: Path) -> tuple[Optional[Path], str, tuple[str, ...]]:
    """The first config file of ``$SANDFLEET_CONFIG``, ``./sandfleet.yml``, the user's; how it was
    chosen; the later candidates that exist and are ignored. A ``SANDFLEET_CONFIG`` naming no
    file is an error (a typo must not silently fall back to another file)."""
    named = env.get(CONFIG_VAR, "")
    candidates = [(cwd / PROJECT_FILE, "current directory"), (home / USER_FILE, "home")]
    if named:
        path = cwd / Path(named).expanduser()
        if not path.is_file():
            why = "is a directory" if path.is_dir() else "no such file"
            raise UsageError(f"{CONFIG_VAR}={named!r}: {why}; it names the config file to read "
                             f"(empty or unset: the first of ./{PROJECT_FILE}, ~/{USER_FILE.as_posix()})")
        found: list[tuple[Path, str]] = [(path, CONFIG_VAR)]
    else:
        found = []
    found += [(path, how) for path, how in candidates if path.is_file()]
    if not found:
        return None, "", ()
    ignored = tuple(str(path) for path, _ in found[1:] if not _same(path, found[0][0]))
    return found[0][0], found[0][1], ignored


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def untrusted(path: Path, chosen_by: str) -> Optional[str]:
    """Why the file at ``path`` may have been written by someone other than the user, or ``None``."""
    if chosen_by == "current directory":
        return (f"./{PROJECT_FILE} is read from the current directory, so whoever can write the checkout "
                f"(a cloned repository, a sandboxed task with a writable workspace) wrote it")
    st = path.stat()
    getuid = getattr(os, "geteuid", None)
    if getuid is not None and st.st_uid not in (getuid(), 0):
        return f"{path} is owned by uid {st.st_uid}, not by you"
    if getuid is not None and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others can write {path} (mode {stat.S_IMODE(st.st_mode):04o}; chmod go-w it)"
    return None


def load_config(path: Path, chosen_by: str) -> ConfigFile:
    """Read and check one config file: unknown keys, types and values at ``file:line:col``, and
    the rules of an untrusted file (see the module doc)."""
    path = Path(os.path.abspath(path))
    doc = load_yaml_file(path)
    why = untrusted(path, chosen_by)
    if doc is None:
        return ConfigFile(str(path), chosen_by, why)
    if not isinstance(doc, YMap):
        raise InputError(f"a config file is a mapping of settings ({', '.join(KEYS)}), got {describe(doc)}",
                         getattr(doc, "mark", None) or Mark(str(path), 1, 1))
    check_keys(doc, KEYS, "config", HINTS)
    folder = path.parent
    settings: dict[str, Setting] = {}
    for key, value in doc.items():
        mark = doc.value_mark(key)
        checked: Any
        if key == "inventory":
            items = [(value, mark)] if isinstance(value, str) else \
                [(v, value.item_mark(i)) for i, v in enumerate(value)] if isinstance(value, YList) and value else None
            if items is None:
                raise InputError(f"inventory must be a path or a non-empty list of paths, got "
                                 f"{'an empty list' if isinstance(value, list) else describe(value)}", mark)
            checked = [_path(key, v, m, folder, why) for v, m in items]
        elif key == "forks":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"forks must be a positive integer, got {shown(value)}", mark)
            checked = value
        elif key in CHOICES:
            if value not in CHOICES[key]:
                raise InputError(f"unknown {key} {shown(value)}", mark, allowed=CHOICES[key])
            if key == "host_key_policy" and value == "accept-new" and why:
                raise InputError(f"host_key_policy: accept-new (record any new host key unchecked) cannot come from "
                                 f"this file: {why}; give --host-key-policy accept-new, "
                                 f"SANDFLEET_HOST_KEY_POLICY=accept-new, or set it in your own "
                                 f"~/{USER_FILE.as_posix()} (only you may write it)", mark)
            checked = value
        else:
            checked = _path(key, value, mark, folder, why)
        settings[key] = Setting(checked, f"{path}:{doc.key_mark(key).line}")
    return ConfigFile(str(path), chosen_by, why, settings)


def _path(key: str, value: Any, mark: Mark, folder: Path, why: Optional[str]) -> str:
    """A path setting, absolute (relative ones are relative to the config file's folder)."""
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else describe(value)
        raise InputError(f"{key} must be a path (relative to this file's folder), got {got}", mark)
    path = os.path.normpath(folder / Path(value).expanduser())
    if why and key != "policy" and not at_or_below(os.path.realpath(path), os.path.realpath(folder)):
        raise InputError(f"{key} {value!r} is outside this file's folder ({folder}), and {why}: "
                         f"such a file may name only its own project's {key}; give it on the command line, in "
                         f"{env_var(key)}, or in your own ~/{USER_FILE.as_posix()}", mark)
    return path


def environment(env: Mapping[str, str], cwd: Path) -> dict[str, Setting]:
    """The settings the ``SANDFLEET_*`` variables give (empty ones count as unset); relative
    paths are relative to the current directory, as on the command line."""
    out: dict[str, Setting] = {}
    for key in KEYS:
        name = env_var(key)
        raw = env.get(name, "")
        text = raw.strip()
        if not text:
            continue
        value: Any
        if key == "inventory":
            value = [os.path.normpath(cwd / Path(p.strip()).expanduser())
                     for p in text.split(INVENTORY_SEPARATOR) if p.strip()]
            if not value:
                raise UsageError(f"{name}={raw!r}: expected inventory paths, separated by commas")
        elif key == "forks":
            try:
                value = int(text)
            except ValueError:
                value = 0
            if value < 1:
                raise UsageError(f"{name}={raw!r}: expected a positive integer")
        elif key in CHOICES:
            if text not in CHOICES[key]:
                raise UsageError(f"{name}={raw!r}: expected one of {', '.join(CHOICES[key])}")
            value = text
        else:
            value = os.path.normpath(cwd / Path(text).expanduser())
        out[key] = Setting(value, name)
    return out
