"""INI inventories, read line by line the way Ansible's ``ini`` plugin does.

Lines before the first section belong to ``ungrouped``. ``[g]`` (or ``[g:hosts]``) lists hosts
with inline ``key=value`` pairs split like a shell would (quotes group words, ``#`` starts a
comment); ``[g:vars]`` holds ``key = value`` lines; ``[g:children]`` names child groups, which
may be declared further down the file. Values go through :func:`parse_ini_value`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from sandfleet.errors import InputError, Mark
from sandfleet.inventory.builder import InventoryBuilder
from sandfleet.inventory.ini_values import parse_ini_value
from sandfleet.inventory.model import UNGROUPED
from sandfleet.inventory.ranges import RangeError, expand_host_pattern

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
SECTION_TYPES = ("hosts", "vars", "children")
_COMMENT_MARKERS = ("#", ";")


@dataclass
class _Pending:
    """A group named before it is declared: by ``[g:vars]`` or as someone's child."""

    line: int
    col: int
    state: str
    parents: list[str] = field(default_factory=list)


def decode_ini(data: bytes, file: str) -> list[str]:
    """Split into lines; like Ansible, bytes that are not UTF-8 are tolerated in comment lines only."""
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        pass
    lines: list[str] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if raw[:1] in (b"#", b";"):
            lines.append("")
            continue
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)",
                             Mark(file, number, exc.start + 1)) from None
    return lines


class _IniReader:
    def __init__(self, file: str, builder: InventoryBuilder) -> None:
        self.file = file
        self.builder = builder
        self.pending: dict[str, _Pending] = {}
        self.group = UNGROUPED
        self.state = "hosts"

    def mark(self, number: int, raw: str, needle: str = "") -> Mark:
        col = raw.find(needle) if needle else -1
        if col < 0:
            col = len(raw) - len(raw.lstrip())
        return Mark(self.file, number, col + 1)

    def read(self, lines: list[str]) -> None:
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line[0] in _COMMENT_MARKERS:
                continue
            m = _SECTION.match(line)
            if m:
                self.section(m.group(1), m.group(2) or "hosts", self.mark(number, raw, "["), line)
            elif line.startswith("[") and line.endswith("]"):
                raise InputError(
                    f"invalid section header {line}: a section is [NAME], [NAME:vars] or [NAME:children], "
                    "with no spaces inside the brackets", self.mark(number, raw, "["))
            elif self.state == "hosts":
                self.host_line(line, number, raw)
            elif self.state == "vars":
                self.var_line(line, number, raw)
            else:
                self.child_line(line, number, raw)
        self.check_pending()

    def section(self, name: str, state: str, mark: Mark, line: str) -> None:
        if state not in SECTION_TYPES:
            raise InputError(f"section {line} has unknown type {state!r}", mark,
                             allowed=(f"[{name}]", f"[{name}:vars]", f"[{name}:children]"))
        self.group, self.state = name, state
        if not self.builder.has_group(name):
            if state == "vars" and name not in self.pending:
                self.pending[name] = _Pending(mark.line, mark.col, state)
            self.builder.add_group(name, mark)
        waiting = self.pending.get(name)
        if waiting is not None and state != "vars":
            if waiting.state == "children":
                self.add_pending_children(name)
            else:
                del self.pending[name]

    def add_pending_children(self, group: str) -> None:
        for parent in self.pending[group].parents:
            self.builder.add_child(parent, group, Mark(self.file, self.pending[group].line,
                                                       self.pending[group].col))
            if parent in self.pending and self.pending[parent].state == "children":
                self.add_pending_children(parent)
        del self.pending[group]

    def host_line(self, line: str, number: int, raw: str) -> None:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InputError(f"cannot split host line: {str(exc).lower()} (quotes must be balanced)",
                             self.mark(number, raw)) from None
        if not tokens:
            return
        pattern, mark = tokens[0], self.mark(number, raw)
        try:
            names, port = expand_host_pattern(pattern)
        except RangeError as exc:
            raise InputError(str(exc), mark) from None
        if pattern.strip().endswith(":") and port is None:
            raise InputError(f"host {pattern!r} ends in ':', which is reserved for a port number "
                             "(like host:2222)", mark)
        if any(name.strip() == "---" for name in names):
            raise InputError("'---' is not a host name; it starts a YAML document, but this file is read "
                             "as INI (give YAML inventories a .yml or .yaml name)", mark)
        assignments: list[tuple[str, object, Mark]] = []
        for token in tokens[1:]:
            if "=" not in token:
                raise InputError(f"expected key=value after the host name, got {token!r}",
                                 self.mark(number, raw, token))
            key, text = token.split("=", 1)
            assignments.append((key, parse_ini_value(text), self.mark(number, raw, f"{key}=")))
        for name in names:
            self.builder.add_host(name, self.group, port, mark)
            for key, value, var_mark in assignments:
                self.builder.set_host_var(name, key, value, var_mark)

    def var_line(self, line: str, number: int, raw: str) -> None:
        if "=" not in line:
            raise InputError(f"expected key=value in [{self.group}:vars], got {line!r}", self.mark(number, raw))
        key, text = (part.strip() for part in line.split("=", 1))
        self.builder.set_group_var(self.group, key, parse_ini_value(text), self.mark(number, raw))

    def child_line(self, line: str, number: int, raw: str) -> None:
        m = _GROUP_NAME.match(line)
        mark = self.mark(number, raw)
        if not m:
            raise InputError(f"expected one group name per line in [{self.group}:children], got {line!r}", mark)
        child = m.group(1)
        if self.builder.has_group(child):
            self.builder.add_child(self.group, child, mark)
        elif child in self.pending:
            self.pending[child].parents.append(self.group)
        else:
            self.pending[child] = _Pending(number, mark.col, "children", [self.group])

    def check_pending(self) -> None:
        for name, waiting in self.pending.items():
            mark = Mark(self.file, waiting.line, waiting.col)
            if waiting.state == "vars":
                raise InputError(f"section [{name}:vars] is for group {name!r}, which is never declared "
                                 f"(add a [{name}] section or list it under a [parent:children] section)", mark)
            hint = ""
            if self.builder.has_host(name):
                hint = f"; {name!r} is a host: list hosts under [{waiting.parents[-1]}], groups under [...:children]"
            raise InputError(f"section [{waiting.parents[-1]}:children] includes {name!r}, which is not a "
                             f"group declared in this file{hint}", mark)


def parse_ini_inventory(lines: list[str], file: str, builder: InventoryBuilder) -> None:
    """Add one INI file's groups, hosts and variables to ``builder``."""
    _IniReader(file, builder).read(lines)
