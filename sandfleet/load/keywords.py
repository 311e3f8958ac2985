"""The Ansible play and task keywords that shape *how* tasks run: batches, tags, loop control.

Each keyword is parsed at load time into a small value with the position of any mistake, and
carries the one piece of logic it implies (how ``serial`` cuts hosts into batches, which tasks a
``--tags``/``--skip-tags`` pair selects, which variables a loop item runs with), so the scheduler
and the host loop only ask questions of them.

Ansible semantics kept: ``serial`` is an int, a percentage or a list of them whose last entry
repeats; a percentage rounds down but is at least one host. ``tags`` may be a string, a
comma-separated string or a list; a play's tags apply to its tasks; ``always`` runs unless
skipped by name, ``never`` only when asked for by name (or by one of the task's other tags);
``--tags tagged|untagged|all`` work as in Ansible; ``loop_control: {extended: true}`` gives
``ansible_loop`` with Ansible's fields (docs/variables.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional, get_args

from sandfleet.errors import InputError, Mark, UsageError
from sandfleet.load.sandbox_spec import check_keys, expect_map
from sandfleet.load.varnames import name_error
from sandfleet.load.yamlsrc import YList
from sandfleet_agent.portable.words import describe, shown

Strategy = Literal["linear", "free"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
LOOP_CONTROL_KEYS = ("loop_var", "index_var", "label", "pause", "extended", "extended_allitems")


@dataclass(frozen=True)
class BatchSize:
    """One entry of ``serial``: a number of hosts, or a percentage of the play's hosts."""

    count: Optional[int] = None
    percent: Optional[float] = None

    def hosts_of(self, total: int) -> int:
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return max(1, math.floor(total * self.percent / 100))


def batches(hosts: list[str], serial: tuple[BatchSize, ...]) -> list[list[str]]:
    """Cut the play's hosts into ``serial`` batches; no serial is one batch of every host."""
    if not serial:
        return [list(hosts)] if hosts else []
    out: list[list[str]] = []
    start, step = 0, 0
    while start < len(hosts):
        size = serial[min(step, len(serial) - 1)].hosts_of(len(hosts))
        out.append(hosts[start:start + size])
        start, step = start + size, step + 1
    return out


def parse_serial(value: Any, mark: Mark) -> tuple[BatchSize, ...]:
    items = list(value) if isinstance(value, YList) else [value]
    if not items:
        raise InputError("serial is an empty list", mark)
    marks = [value.item_mark(i) for i in range(len(items))] if isinstance(value, YList) else [mark]
    return tuple(_batch_size(item, m) for item, m in zip(items, marks))


def _batch_size(value: Any, mark: Mark) -> BatchSize:
    allowed = ("a number of hosts (5)", "a percentage ('30%')", "a list of them ([1, 5, '50%'])")
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise InputError(f"serial must be at least 1 host, got {value}", mark, allowed=allowed)
        return BatchSize(count=value)
    if isinstance(value, str) and value.strip().endswith("%"):
        percent = _number(value.strip()[:-1])
        if percent is None or not 0 < percent <= 100:
            raise InputError(f"serial percentage must be above 0% and at most 100%, got {value!r}", mark,
                             allowed=allowed)
        return BatchSize(percent=percent)
    raise InputError(f"serial must be a number of hosts or a percentage, got {describe(value)}", mark,
                     allowed=allowed)


def parse_percentage(value: Any, mark: Mark, what: str) -> float:
    number = _number(value.strip().rstrip("%")) if isinstance(value, str) else (
        None if isinstance(value, bool) else value if isinstance(value, (int, float)) else None)
    if number is None or not 0 <= number <= 100:
        raise InputError(f"{what} must be a percentage from 0 to 100, got {shown(value)}", mark,
                         allowed=("0-100", "'25%'"))
    return float(number)


def _number(text: str) -> Optional[float]:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_tags(value: Any, mark: Mark) -> tuple[str, ...]:
    items = list(value) if isinstance(value, YList) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool) or item is None or not isinstance(item, (str, int, float)):
            raise InputError(f"tags must be a name or a list of names, got {describe(item)}", mark)
        out.extend(t.strip() for t in str(item).split(",") if t.strip())
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class LoopControl:
    loop_var: str = "item"
    index_var: Optional[str] = None
    label: Optional[str] = None  # a template rendered per item, shown instead of the item
    pause: float = 0.0  # seconds between items
    extended: bool = False  # ansible_loop: index, first, last, previtem, ... (item_vars)
    extended_allitems: bool = True  # ansible_loop.allitems too

    def item_vars(self, items: Sequence[Any], n: int) -> dict[str, Any]:
        """The variables item ``n`` of ``items`` runs with, as Ansible's task executor sets them:
        the loop variable, ``ansible_loop_var``, the index variable and ``ansible_index_var`` when
        ``index_var`` is given, and with ``extended`` ``ansible_loop`` (``previtem`` is absent on the
        first item and ``nextitem`` on the last, so both read as undefined there, as in Ansible)."""
        out: dict[str, Any] = {self.loop_var: items[n] if n < len(items) else None, "ansible_loop_var": self.loop_var}
        if self.index_var:
            out[self.index_var] = n
            out["ansible_index_var"] = self.index_var
        if self.extended:
            length = len(items)
            loop: dict[str, Any] = {"index": n + 1, "index0": n, "first": n == 0, "last": n + 1 == length,
                                    "length": length, "revindex": length - n, "revindex0": length - n - 1}
            if self.extended_allitems:
                loop["allitems"] = items  # the one list, as Ansible passes it
            if n + 1 < length:
                loop["nextitem"] = items[n + 1]
            if n > 0:
                loop["previtem"] = items[n - 1]
            out["ansible_loop"] = loop
        return out


NO_LOOP_CONTROL = LoopControl()


def parse_loop_control(value: Any, mark: Mark, check_template: Any) -> LoopControl:
    node = expect_map(value, mark, "loop_control")
    check_keys(node, LOOP_CONTROL_KEYS, "loop_control")
    names: dict[str, Optional[str]] = {}
    for key in ("loop_var", "index_var"):
        if key in node:
            name = node[key]
            problem = name_error(key, name)
            if problem:
                raise InputError(problem, node.value_mark(key))
            names[key] = name
    label: Optional[str] = None
    if "label" in node:
        raw = node["label"]
        if raw is None or isinstance(raw, (dict, list)):
            raise InputError(f"label must be a string (a template), got {describe(raw)}", node.value_mark("label"))
        label = str(raw)
        check_template(label, node.value_mark("label"), "loop_control.label")
    pause = 0.0
    if "pause" in node:
        raw = node["pause"]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw < math.inf:
            raise InputError(f"pause must be a number of seconds, got {describe(raw)}", node.value_mark("pause"))
        pause = float(raw)
    flags = {key: _flag(node, key) for key in ("extended", "extended_allitems") if key in node}
    return LoopControl(names.get("loop_var") or "item", names.get("index_var"), label, pause, **flags)


def _flag(node: Any, key: str) -> bool:
    value = node[key]
    if not isinstance(value, bool):
        raise InputError(f"{key} must be true or false, got {describe(value)}", node.value_mark(key),
                         allowed=("true", "false"))
    return value


@dataclass(frozen=True)
class TagFilter:
    """``--tags`` and ``--skip-tags`` as Ansible applies them to a task's (inherited) tags."""

    only: tuple[str, ...] = ("all",)
    skip: tuple[str, ...] = ()

    @classmethod
    def from_cli(cls, tags: Optional[list[str]], skip: Optional[list[str]]) -> TagFilter:
        def split(values: Optional[list[str]], flag: str) -> tuple[str, ...]:
            out = tuple(t.strip() for v in values or () for t in v.split(",") if t.strip())
            if values is not None and not out:
                raise UsageError(f"{flag} needs at least one tag name")
            return out
        return cls(split(tags, "--tags") or ("all",), split(skip, "--skip-tags"))

    def selects(self, tags: tuple[str, ...]) -> bool:
        own = set(tags)
        if own & set(self.skip) or ("tagged" in self.skip and own) or ("untagged" in self.skip and not own):
            return False
        if "always" in own and "always" not in self.skip:
            return True
        wanted = set(self.only)
        if own & wanted:
            return True
        if "never" in own:
            return False
        return "all" in wanted or ("tagged" in wanted and bool(own)) or ("untagged" in wanted and not own)


__all__ = [
    "NO_LOOP_CONTROL",
    "STRATEGIES",
    "BatchSize",
    "LoopControl",
    "Strategy",
    "TagFilter",
    "batches",
    "parse_loop_control",
    "parse_percentage",
    "parse_serial",
    "parse_tags",
]
