"""Bounded tasks: memory, processes, CPU time, file size, open files and captured output.

One agent-generated fork bomb or memory leak on a shared runner takes the host down for every
other tenant; these limits stop that (docs/limits.md is the user's view). A task may ask
(``sandbox: {limits: ...}``); the policy's ``resources:`` gives each limit a **default** and a
**max** (more is ``denied``). Built-in defaults: 4096 processes (a fork bomb stops there, an
ordinary parallel build never gets close), half of the host's memory (a runaway allocation is
killed before the host swaps itself to death, while a big link or test run still fits) and 1 MiB
of captured output per stream. No maximum is built in.

What an OS cannot enforce at all (:data:`UNENFORCED`) is refused when named, unless the policy
allows ``best_effort``. This is the half that travels (the request, the policy, the controller's
checks); how a host enforces them is :mod:`sandfleet_agent.bounds`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Optional

KEYS = ("memory", "pids", "cpu_seconds", "file_size", "open_files", "output")
SIZE_KEYS = ("memory", "file_size", "output")
DEFAULT_PIDS = 4096
DEFAULT_OUTPUT = 1 << 20
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.I)


@dataclass(frozen=True)
class TaskLimits:
    """Limits for one task; ``None`` = no limit of that kind (sizes in bytes)."""

    memory: Optional[int] = None
    pids: Optional[int] = None
    cpu_seconds: Optional[int] = None
    file_size: Optional[int] = None
    open_files: Optional[int] = None
    output: Optional[int] = None

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def to_json(self) -> dict[str, int]:
        return dict(self.items())


NO_LIMITS = TaskLimits()


#: The largest value any limit takes (what the kernel's 64-bit limits hold, with room).
MAX_VALUE = 1 << 62


def parse_size(value: object, key: str) -> int:
    """``512M``, ``2G``, ``1048576`` (bytes, powers of 1024); ``ValueError`` saying what is wrong."""
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a size like 512M or a number of bytes, got a boolean")
    if isinstance(value, int) and value > 0:
        return _bounded(value, key)
    m = _SIZE.match(value) if isinstance(value, str) else None
    if m is None or int(m.group(1)) <= 0:
        raise ValueError(f"{key} must be a positive size like 512M, 2G or a number of bytes, got {value!r}")
    return _bounded(int(m.group(1)) * _UNITS[m.group(2).lower()], key)


def parse_count(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key} must be a positive whole number, got {value!r}")
    return _bounded(value, key)


def _bounded(value: int, key: str) -> int:
    if value > MAX_VALUE:
        raise ValueError(f"{key} is larger than any host can hold (at most {MAX_VALUE})")
    return value


def parse_limits(data: object, where: str = "limits") -> TaskLimits:
    """A ``limits`` mapping as :class:`TaskLimits`; ``ValueError`` naming the key."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping of {', '.join(KEYS)}")
    values: dict[str, int] = {}
    for key, value in data.items():
        if key not in KEYS:
            raise ValueError(f"unknown limit {key!r} in {where} (known: {', '.join(KEYS)})")
        values[key] = parse_size(value, key) if key in SIZE_KEYS else parse_count(value, key)
    return TaskLimits(**values)


def shown(key: str, value: int) -> str:
    if key in SIZE_KEYS:
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size and value % size == 0:
                return f"{value // size} {unit}"
        return f"{value} bytes"
    return f"{value}{' s' if key == 'cpu_seconds' else ''}"


def described(limits: Mapping[str, int], mechanism: Optional[str]) -> str:
    """``memory 1 GiB, pids 16, output 1 MiB (cgroup1)``: a result's limits for people."""
    said = ", ".join(f"{key} {shown(key, limits[key])}" for key in KEYS if key in limits) or "none"
    return f"{said} ({mechanism})" if mechanism else said


def built_in_defaults(mem_total: int) -> TaskLimits:
    """What a task gets when nobody said anything (see the module doc for why)."""
    return TaskLimits(memory=mem_total // 2 if mem_total else None, pids=DEFAULT_PIDS, output=DEFAULT_OUTPUT)


def merged(first: TaskLimits, then: TaskLimits) -> TaskLimits:
    """``first``'s values, ``then``'s where ``first`` has none."""
    return replace(first, **{k: v for k, v in then.items() if getattr(first, k) is None})


def lowest(a: TaskLimits, b: TaskLimits) -> TaskLimits:
    """The smaller of each limit (a limit beats no limit)."""
    out = {}
    for f in fields(TaskLimits):
        x, y = getattr(a, f.name), getattr(b, f.name)
        out[f.name] = y if x is None else x if y is None else min(x, y)
    return TaskLimits(**out)


#: What each OS's agent cannot bound. macOS has no working RLIMIT_AS and no cgroups; the Windows
#: launcher has no job object yet. Linux bounds everything (cgroups, else rlimits).
UNENFORCED = {"macos": ("memory",), "windows": ("memory", "pids", "cpu_seconds", "file_size", "open_files")}


def for_host(limits: TaskLimits, named: set[str], os_name: str,
             best_effort: bool) -> tuple[TaskLimits, tuple[str, ...], Optional[str]]:
    """``limits`` without what ``os_name`` cannot enforce: a built-in default is dropped quietly,
    a limit the task or the policy named is refused unless the policy allows ``best_effort``
    (then it is dropped with a warning). Returns (limits, warnings, refusal)."""
    missing = [key for key in UNENFORCED.get(os_name, ()) if getattr(limits, key) is not None]
    named_missing = [key for key in missing if key in named]
    if named_missing and not best_effort:
        return limits, (), (f"limits: {os_name} cannot enforce {', '.join(named_missing)} "
                            "(resources.best_effort: true in the policy runs the task without)")
    warnings = tuple(f"limits: {key} is not enforced on {os_name} (resources.best_effort)" for key in named_missing)
    return replace(limits, **{key: None for key in missing}), warnings, None


