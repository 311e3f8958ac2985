"""Playbooks: the data model and the loader that validates a playbook file into it.

Everything is checked at load time, before any host is touched: unknown keys, wrong types,
broken ``{{ }}`` syntax, bad sandbox blocks. Each mistake is one :class:`InputError` at the
offending key or value; the loader keeps going to the next play, task or key where it safely
can (not inside a value whose shape is wrong) and raises one :class:`InputError` carrying every
mistake, in file order (``.errors``). argv, cwd and env stay raw strings: templates are rendered later, per
host, by the runner; here they are only parsed.

Decisions worth knowing (the sandbox block grammar lives in :mod:`sandfleet.load.sandbox_spec`):

- argv items and env values are scalars taken as written (``010`` stays ``"010"``, ``yes`` stays
  ``"yes"``); null, lists and mappings are errors, as is NUL anywhere or an empty argv[0].
  A literal ``{{`` is written ``{{ '{{' }}``, since every argv/cwd/env string is a template.
- cwd: ``:workspace_roots[/sub]``, ``~[/sub]``, an absolute POSIX or Windows path, or any string
  holding a template (checked as a path only once rendered on the host). Kept as written.
- ``timeout`` may be given on the task (Ansible style) or in ``exec``, not both; the effective
  value is on both ``Task.timeout`` and ``ExecSpec.timeout``.
- ``when`` is a bare Jinja expression (``{{ }}`` in it is an error), a boolean, or a list of them
  (joined with ``and``, as Ansible does). ``loop`` is a list or a template string.
- Names default to what Ansible shows: the hosts pattern for a play, the argv for a task.
- A play without ``tasks`` loads with a warning; ``vars`` keys must be variable names (:mod:`sandfleet.load.varnames`)
  and none the operator decides (:data:`OPERATOR_ONLY`: connection and ``sandfleet_*`` settings).
- Ansible keys sandfleet does not have (``shell``, ``command``, ``ansible.builtin.*`` and other
  modules, ``with_*``, ``become``, ``handlers``/``notify``, ``delegate_to``, ``gather_facts``, ...)
  get a pointed hint: the sandfleet way, or that it is not supported.
- ``environment`` (play and task, as in Ansible) is a mapping of NAME: value merged under the
  task's ``exec.env``: the play's, then the task's, then ``exec.env``, the later winning. Its
  values are templates, exactly as ``env``'s. Each of the three may instead be one template giving
  the whole mapping (``environment: "{{ proxy_env }}"``): the levels then merge once rendered
  (``ExecSpec.env_layers``, :mod:`sandfleet.run.requests`).
- A ``sandbox:`` block is never templated: ``{{ }}`` in it is an error, not a literal path.
- ``!unsafe`` text (:class:`~sandfleet.load.yamlsrc.UnsafeText`) is never parsed nor rendered as a
  template; a ``!vault`` value written where a task needs text (argv, env, a name, a loop item) is
  an error (sandfleet cannot decrypt it); in ``vars`` it is an error only where it is used.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Callable, NamedTuple, Optional, TypeVar, Union

import yaml

from sandfleet.errors import InputError, Mark
from sandfleet.load.keywords import (
    NO_LOOP_CONTROL,
    STRATEGIES,
    BatchSize,
    LoopControl,
    Strategy,
    parse_loop_control,
    parse_percentage,
    parse_serial,
    parse_tags,
)
from sandfleet.load.sandbox_spec import (
    DEFAULT_INTENT,
    check_subpath,
    expect_list,
    expect_map,
    looks_absolute,
    native_path_uri,
    parse_sandbox,
    plain,
)
from sandfleet.load.varnames import name_error
from sandfleet.load.yamlsrc import UnsafeText, VaultedValue, YList, YMap, load_yaml_file, load_yaml_text
from sandfleet.templating import TEMPLATE_START, check_template
from sandfleet.templating import check_expression as _check_expression
from sandfleet_agent.portable.intent import SandboxIntent
from sandfleet_agent.portable.words import describe, shown, suggest

__all__ = [
    "EXEC_KEYS",
    "PLAY_KEYS",
    "TASK_KEYS",
    "ExecSpec",
    "Play",
    "Playbook",
    "PlaybookWarning",
    "SandboxOrigin",
    "SandboxSetting",
    "Task",
    "load_playbook",
]

PLAY_KEYS = ("name", "hosts", "vars", "sandbox", "tasks", "serial", "strategy", "max_fail_percentage",
             "any_errors_fatal", "tags", "environment")
TASK_KEYS = ("name", "exec", "sandbox", "when", "loop", "loop_control", "register", "ignore_errors", "timeout",
             "failed_when", "changed_when", "run_once", "tags", "environment")
EXEC_KEYS = ("argv", "cwd", "env", "timeout")

_SHELL_HINT = "sandfleet runs commands only through exec: {argv: [program, arg, ...]}, never a shell"
_TASK_HINTS = {
    **{k: _SHELL_HINT for k in ("command", "shell", "raw", "script", "ansible.builtin.command",
                                "ansible.builtin.shell", "ansible.builtin.raw", "ansible.builtin.script")},
    **{k: "use loop: [...]" for k in ("with_items", "with_list", "with_dict", "with_nested")},
    "delegate_to": "every task runs on its own host; target another host with a separate play",
    "local_action": "every task runs on its own host; target the controller with a play on localhost",
    **{k: "retries are not supported; make the command itself retry" for k in ("until", "retries", "delay")},
    "notify": "handlers are not supported; run the follow-up as a task with when: (register: r here, "
              "then when: r.changed)",
    "vars": "task-level vars are not supported; put them under the play's vars: (or use -e)",
    **{k: "blocks are not supported; list the tasks directly (ignore_errors/failed_when for errors)"
       for k in ("block", "rescue", "always")},
    **{k: "includes are not supported; list the tasks in the play" for k in ("include_tasks", "import_tasks",
                                                                            "include_role", "import_role")},
    "debug": "sandfleet has no modules; print with exec: {argv: [echo, ...]}",
    "set_fact": "sandfleet has no modules; use the play's vars: or register: a command's output",
    "setup": "facts are always there: tasks see them as sandfleet_facts (e.g. {{ sandfleet_facts.home }})",
}
_BECOME_HINT = ("privilege escalation is not supported in a playbook: set ansible_become: true and "
                "ansible_become_user in the inventory (the agent, and so every task, runs as that user "
                "through sudo -n)")
_MODULE_HINT = "sandfleet has no modules: every task runs one command, exec: {argv: [program, arg, ...]}"
#: Ansible modules an existing playbook often uses (any ``namespace.collection.module`` key too).
_MODULES = ("copy", "file", "template", "apt", "yum", "dnf", "package", "pip", "service", "systemd", "git",
            "lineinfile", "blockinfile", "get_url", "uri", "stat", "fail", "assert", "wait_for", "ping", "user",
            "group", "unarchive", "synchronize", "cron", "mount", "replace", "fetch", "slurp", "find")
_PLAY_HINTS = {
    "roles": "sandfleet plays have tasks only",
    "vars_files": "put variables under vars:",
    "handlers": "handlers are not supported; run the follow-up as a task with when: (register: r on the first "
                "task, then when: r.changed)",
    "gather_facts": "facts are always there: tasks see them as sandfleet_facts (e.g. {{ sandfleet_facts.home }}); "
                    "remove this key",
    "remote_user": "set ansible_user in the inventory",
    "connection": "set ansible_connection in the inventory",
    **{k: "put these tasks under tasks:, in order" for k in ("pre_tasks", "post_tasks")},
    "vars_prompt": "prompts are not supported; pass values with -e NAME=VALUE",
    "import_playbook": "not supported; run each playbook with its own sandfleet run",
}
_SHELL_CHARS = re.compile(r"[|&;<>()$`]")
_T = TypeVar("_T")

#: Variables only the operator sets (in the inventory, or with -e): how a host is reached and as
#: whom, what starts its agent, and every ``sandfleet_*`` setting (the policy, consent to run bare,
#: the backend, the host's paths). A playbook is the playbook author's, and so is the folder it
#: sits in: its ``vars:`` and the ``group_vars/``/``host_vars/`` beside it may not name them.
OPERATOR_ONLY = re.compile(
    r"sandfleet_\w*|ansible_(?:host|port|user|connection|password|private_key_file|python_interpreter|"
    r"remote_tmp|pipelining|timeout|host_key_checking|network_os|become(?:_\w+)?|sudo(?:_\w+)?|su_\w+|"
    r"(?:ssh|sftp|scp|paramiko|shell|winrm|psrp|httpapi|netconf|local)_\w+|\w+_interpreter)")
#: Connection secrets (``ansible_password``, ``ansible_ssh_pass``, ``ansible_become_password``, ...):
#: no template reads them, not a host's own nor another's through ``hostvars``. The inventory
#: gives them to the connection, not to the commands a playbook runs (nor to its output).
CONNECTION_SECRET = re.compile(r"ansible_(?:\w+_)?(?:pass|password|passphrase)")


def operator_only(name: str) -> Optional[str]:
    """Why a playbook may not set the variable ``name`` (``None``: it may)."""
    if not OPERATOR_ONLY.fullmatch(name):
        return None
    what = "sandfleet setting" if name.startswith("sandfleet_") else "connection setting"
    return (f"{name!r} is a {what}, which only the operator decides: set it in the inventory or with -e (a "
            "playbook, and the folder it is in, may not choose how a host is reached, as whom, or under which walls)")


def connection_secret(name: str) -> Optional[str]:
    """Why no template may read ``name`` (``None``: one may)."""
    if not CONNECTION_SECRET.fullmatch(name):
        return None
    return "it is a connection secret, given to the connection only, never to a template (docs/variables.md)"


def _hint(key: Any, value: Any, hints: Mapping[str, str]) -> Optional[str]:
    """What an Ansible user should write instead of ``key`` (``None``: no hint, a typo perhaps)."""
    name = str(key)
    if name in ("become", "become_user", "become_method", "become_flags"):
        return _BECOME_HINT
    hint = hints.get(name)
    if hint == _SHELL_HINT and isinstance(value, str) and value.strip():
        argv, paren, note = _suggest_argv(value).partition(" (")
        return f"{hint}; here: exec: {{argv: {argv}}}{paren}{note}"
    if hint is None and hints is _TASK_HINTS:
        if name.startswith("with_"):
            return "use loop: [...]"
        if name in _MODULES or name.count(".") >= 2:  # ansible.builtin.copy, community.general.x
            return _MODULE_HINT
    return hint


def _unknown_keys(node: YMap, allowed: tuple[str, ...], what: str,
                  hints: Optional[Mapping[str, str]] = None) -> list[InputError]:
    """Every unknown key of ``node``, each an error at the key (as :func:`check_keys` words it)."""
    out = []
    for key in node:
        if key in allowed:
            continue
        hint = _hint(key, node[key], hints) if hints is not None else None
        extra = f"; {hint}" if hint else suggest(key, allowed)
        out.append(InputError(f"unknown {what} key {key!r}{extra}", node.key_mark(key), allowed=allowed))
    return out


def _stands_for(node: YMap, allowed: tuple[str, ...], hints: Mapping[str, str], required: str) -> bool:
    """Whether an unknown key of ``node`` already says what to write for the missing ``required``
    one (``host:`` for ``hosts:``, ``shell:`` for ``exec:``): its error is then the one to read."""
    for key in node:
        if key in allowed:
            continue
        hint = _hint(key, node[key], hints) or ""
        if f"'{required}'" in suggest(key, allowed) or (required == "exec" and "exec: {argv" in hint):
            return True
    return False


def _in_file_order(errors: list[InputError]) -> list[InputError]:
    """Each mistake once, by position (stable: at one position, the first found stays first)."""
    seen: set[str] = set()
    unique = [e for e in errors if not (e.line() in seen or seen.add(e.line()))]  # type: ignore[func-returns-value]
    return sorted(unique, key=lambda e: (0, e.mark.line, e.mark.col) if e.mark else (1, 0, 0))


@dataclass(frozen=True)
class PlaybookWarning:
    """A problem reported to the user that does not stop the run (e.g. an unknown ``:symbol``)."""

    message: str
    mark: Mark

    def __str__(self) -> str:
        return f"{self.mark}: warning: {self.message}"


class SandboxOrigin(str, Enum):
    """Where a task's (or play's) effective sandbox was written."""

    DEFAULT = "default"  # nowhere: the built-in default (workspace profile, network none)
    PLAY = "play"  # the play's own `sandbox:` (for a task: inherited)
    TASK = "task"  # the task's own `sandbox:`, which replaced the play's


@dataclass(frozen=True)
class SandboxSetting:
    """The effective sandbox: an intent, or ``None`` for an explicitly unsandboxed task
    (``sandbox: false``, which is the only way to get ``None``)."""

    intent: Optional[SandboxIntent]
    origin: SandboxOrigin = SandboxOrigin.DEFAULT
    mark: Optional[Mark] = None  # where the `sandbox:` value was written; None for the default

    @property
    def sandboxed(self) -> bool:
        return self.intent is not None


DEFAULT_SANDBOX = SandboxSetting(DEFAULT_INTENT)


@dataclass(frozen=True)
class ExecSpec:
    """The one action: run argv (no shell), with raw, unrendered ``{{ }}`` templates.

    The ``*_marks`` fields locate each value for render-time errors; they take no part in equality.
    """

    argv: tuple[str, ...]
    cwd: Optional[str] = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None  # seconds; same value as Task.timeout
    argv_marks: tuple[Mark, ...] = field(default=(), compare=False, repr=False)
    cwd_mark: Optional[Mark] = field(default=None, compare=False, repr=False)
    env_marks: Mapping[str, Mark] = field(default_factory=dict, compare=False, repr=False)
    #: When an env level is one template giving a whole mapping (``env: "{{ my_env }}"``, an
    #: ``environment: "{{ proxy_env }}"``): every level in merge order (the play's environment, the
    #: task's, ``exec.env``), merged only once rendered; ``env`` then holds the fixed levels alone.
    env_layers: tuple[EnvLayer, ...] = ()

    def env_templates(self) -> list[str]:
        """The texts of the levels given as one template (for what a task reads)."""
        return [layer.text for layer in self.env_layers if isinstance(layer, EnvTemplate)]


class EnvTemplate(NamedTuple):
    """An env level written as one template that must render to a mapping of NAME: value (a tuple,
    so whatever walks a task's fields for the templates in them finds ``text``)."""

    text: str
    mark: Mark
    what: str  # "env" or "environment", as written


#: One level of a task's environment: fixed entries (each a template, with its mark) or one template.
EnvLayer = Union[EnvTemplate, tuple[Mapping[str, str], Mapping[str, Mark]]]
_EnvLevel = Union[EnvTemplate, tuple[dict[str, str], dict[str, Mark]]]


@dataclass(frozen=True)
class Task:
    name: str  # as written; defaults to the argv, shell-quoted for reading
    exec: ExecSpec
    sandbox: SandboxSetting
    when: Optional[str]  # a bare Jinja expression; a list of conditions is joined with `and`
    loop: Optional[Any]  # a list (plain data) or a template string producing one
    register: Optional[str]
    ignore_errors: bool
    timeout: Optional[float]  # effective: from `timeout:` or `exec.timeout` (never both)
    mark: Mark
    failed_when: Optional[str] = None  # bare expressions, a list joined with `and` (as `when`)
    changed_when: Optional[str] = None
    run_once: bool = False
    tags: tuple[str, ...] = ()  # the task's own and its play's
    loop_control: LoopControl = NO_LOOP_CONTROL
    #: Where ``when``, ``failed_when``, ``changed_when`` and ``loop`` were written, so an error in
    #: rendering one points at its own line, not the task's first.
    marks: Mapping[str, Mark] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Play:
    name: str  # as written; defaults to the hosts pattern, as Ansible shows it
    hosts: str  # an Ansible host pattern; a list is joined with ':'
    vars: Mapping[str, Any]
    sandbox: SandboxSetting  # the play default; origin DEFAULT when the play gives none
    tasks: tuple[Task, ...]
    mark: Mark
    serial: tuple[BatchSize, ...] = ()  # no serial: one batch of every host
    strategy: Strategy = "linear"
    max_fail_percentage: Optional[float] = None
    any_errors_fatal: bool = False
    tags: tuple[str, ...] = ()  # the play's own (each task's tags include them)


@dataclass(frozen=True)
class Playbook:
    path: str
    plays: tuple[Play, ...]
    warnings: tuple[PlaybookWarning, ...] = ()


def task_position(playbook: Playbook, name: str) -> Optional[tuple[int, int]]:
    """Where ``--start-at-task NAME`` starts: the play and task index of the first task whose name
    is ``NAME`` or matches it as a glob (Ansible's rule), across plays; ``None`` if none does."""
    for p, play in enumerate(playbook.plays):
        for t, task in enumerate(play.tasks):
            if task.name == name or fnmatch.fnmatchcase(task.name, name):
                return p, t
    return None


def load_playbook(path: str) -> Playbook:
    """Load and validate a playbook; any mistake raises :class:`InputError` with its position."""
    name = str(path)
    data = load_yaml_file(name)
    return _Loader(name).playbook(data)


def load_playbook_data(plays: list[Any], source: str) -> Playbook:
    """A playbook built in code (the Python API, ``sandfleet exec``, ``sandfleet serve``), checked
    exactly as a file is: it goes through the same YAML reading and loader, ``source`` standing
    for the file in messages. Plain data only: what YAML can hold."""
    try:
        text = yaml.dump(plays, Dumper=_DUMPER, allow_unicode=True, sort_keys=False)
        text.encode("utf-8")  # a lone surrogate cannot be a file's text either
    except (yaml.YAMLError, UnicodeError, RecursionError, OverflowError, ValueError) as exc:
        raise InputError(f"{source}: cannot be written as a playbook: {str(exc)[:200]}") from None
    try:
        return _Loader(source).playbook(load_yaml_text(text, source))
    except InputError as exc:  # a line and column of text nobody wrote would only mislead
        raise InputError.collect([InputError(f"{source}: {e.message}", allowed=e.allowed)
                                  for e in exc.errors]) from None


#: libyaml's emitter when PyYAML has it, as for reading.
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _check_template(text: str, mark: Mark, what: str) -> None:
    """A template must parse; ``!unsafe`` text is not a template at all."""
    if not isinstance(text, UnsafeText):
        check_template(text, mark, what)


def _scalars(value: Any, mark: Mark) -> Iterator[tuple[Any, Mark]]:
    """Every plain value inside loaded data (vars, loop items), each with where it was written."""
    if isinstance(value, YMap):
        for k, v in value.items():
            yield from _scalars(v, value.value_mark(k))
    elif isinstance(value, YList):
        for i, v in enumerate(value):
            yield from _scalars(v, value.item_mark(i))
    else:
        yield value, mark


def _no_vault(value: Any, mark: Mark, what: str) -> None:
    """A vaulted value where the task itself needs it (a loop item) cannot be used."""
    for item, where in _scalars(value, mark):
        if isinstance(item, VaultedValue):
            raise InputError(f"{what} is vaulted (!vault); sandfleet cannot decrypt it (Ansible Vault decryption "
                             "is not supported)", where)


def _no_template_in_sandbox(value: Any, mark: Mark) -> None:
    """A ``sandbox:`` block is never rendered: the walls are fixed when the playbook loads, the same
    text on every host (a dry-run shows what runs). ``{{ }}`` there would be taken as a literal path
    or name, so it is an error, ``{{ omit }}`` included."""
    if isinstance(value, YMap):
        for key, item in value.items():
            _no_template_in_sandbox(key, value.key_mark(key))
            _no_template_in_sandbox(item, value.value_mark(key))
    elif isinstance(value, YList):
        for i, item in enumerate(value):
            _no_template_in_sandbox(item, value.item_mark(i))
    elif isinstance(value, str) and any(d in value for d in TEMPLATE_START):
        what = "omit" if "omit" in value else "a template"
        raise InputError(f"{shown(value)} in sandbox: the sandbox is never templated, so {what} here would be taken "
                         "as this very text; write the path, name or value itself (omit works only in argv, env and "
                         "cwd)", mark)


def _check_templates_in(value: Any, mark: Mark, what: str) -> None:
    """Every string inside loaded data (vars, loop items) must parse as a template."""
    for item, where in _scalars(value, mark):
        if isinstance(item, str):
            _check_template(item, where, what)


#: The longest a task may run: 30 days. Far more than any CI job, and small enough for every
#: timer and poll the agent and the controller arm (1e9 s overflowed the agent's).
MAX_SECONDS = 30 * 24 * 3600


def _positive_number(value: Any, mark: Mark, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number of seconds, got {describe(value)}", mark)
    try:
        seconds = float(value)
    except OverflowError:
        seconds = float("inf")
    if not (0 < seconds <= MAX_SECONDS):
        raise InputError(f"{what} must be a positive number of seconds, got {str(value)[:40]} (at most "
                         f"{MAX_SECONDS}: 30 days)", mark)
    return seconds


def _scalar_text(container: Any, key: Any, value: Any, mark: Mark, what: str) -> str:
    """A scalar exactly as written: ``010`` stays ``"010"``, ``yes`` stays ``"yes"``."""
    if value is None:
        raise InputError(f"{what} is null (empty, `~` or `null`); quote it if you mean that text, or "
                         "remove it", mark)
    if isinstance(value, (dict, list)):
        raise InputError(f"{what} must be a plain value (string or number), got {describe(value)}", mark)
    if isinstance(value, VaultedValue):
        raise InputError(f"{what} is vaulted (!vault); sandfleet cannot decrypt it (Ansible Vault decryption is "
                         "not supported)", mark)
    if isinstance(value, str):
        text = value
    else:
        raw = container.raw(key)
        text = raw if raw is not None else str(value)
    if "\0" in text:
        raise InputError(f"{what} contains a NUL character, which no OS can pass to a program", mark)
    return text


def _flow_list(items: list[str]) -> str:
    return yaml.safe_dump(items, default_flow_style=True, allow_unicode=True, width=10**6).strip()


class _Loader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.warnings: list[PlaybookWarning] = []
        self.errors: list[InputError] = []

    def warn(self, message: str, mark: Mark) -> None:
        self.warnings.append(PlaybookWarning(message, mark))

    def attempt(self, default: Any, check: Callable[..., _T], *args: Any) -> _T:
        """``check(*args)``, or ``default`` after recording its error: the loader goes on (what it
        builds is dropped once an error is recorded, so ``default`` need only keep it going)."""
        try:
            return check(*args)
        except InputError as exc:
            self.errors.extend(exc.errors)
            return default  # type: ignore[no-any-return]

    def fail(self, error: InputError) -> None:
        self.errors.append(error)

    def playbook(self, data: Any) -> Playbook:
        start = Mark(self.file, 1, 1)
        if data is None:
            raise InputError("the playbook is empty; it must be a list of plays", start)
        if isinstance(data, YMap):
            raise InputError("the playbook must be a list of plays, got a mapping; start each play with "
                             "'- hosts: ...'", data.mark)
        plays = expect_list(data, start, "the playbook (a list of plays)")
        if not plays:
            raise InputError("the playbook has no plays", plays.mark)
        out = [self.attempt(None, self.play, item, plays.item_mark(i)) for i, item in enumerate(plays)]
        if self.errors:
            raise InputError.collect(_in_file_order(self.errors))
        return Playbook(self.file, tuple(p for p in out if p is not None), tuple(self.warnings))

    # --- plays ----------------------------------------------------------------------------------

    def play(self, value: Any, mark: Mark) -> Optional[Play]:
        """The play, or ``None`` when a mistake in it was recorded (the rest is still checked)."""
        node = expect_map(value, mark, "a play")
        before = len(self.errors)
        self.errors += _unknown_keys(node, PLAY_KEYS, "play", _PLAY_HINTS)
        hosts = ""
        if "hosts" not in node:
            if not _stands_for(node, PLAY_KEYS, _PLAY_HINTS, "hosts"):
                self.fail(InputError("the play has no 'hosts' (which hosts to run on, e.g. hosts: all)", node.mark))
        else:
            hosts = self.attempt("", self.hosts, node)
        name = self.attempt(hosts, self.name, node, hosts)
        vars_ = self.attempt({}, self.vars, node) if "vars" in node else {}
        sandbox = self.attempt(None, self.sandbox, node, SandboxOrigin.PLAY) or DEFAULT_SANDBOX
        tags: tuple[str, ...] = (tuple(self.attempt((), parse_tags, node["tags"], node.value_mark("tags")))
                                 if "tags" in node else ())
        environment = self.attempt(({}, {}), self.env, node, "environment") if "environment" in node else ({}, {})
        tasks: tuple[Task, ...] = ()
        if "tasks" in node:
            tasks_node = self.attempt(None, expect_list, node["tasks"], node.value_mark("tasks"), "tasks")
            found = [self.attempt(None, self.task, t, tasks_node.item_mark(i), sandbox, tags, environment)
                     for i, t in enumerate(tasks_node or ())]
            tasks = tuple(t for t in found if t is not None)
        else:
            self.warn("the play has no tasks", node.mark)
        serial = self.attempt((), parse_serial, node["serial"], node.value_mark("serial")) if "serial" in node else ()
        strategy: Strategy = self.attempt("linear", self.strategy, node) if "strategy" in node else "linear"
        max_fail = (self.attempt(None, parse_percentage, node["max_fail_percentage"],
                                 node.value_mark("max_fail_percentage"), "max_fail_percentage")
                    if "max_fail_percentage" in node else None)
        any_errors_fatal = self.attempt(False, self.flag, node, "any_errors_fatal")
        if len(self.errors) > before:
            return None
        return Play(
            name, hosts, MappingProxyType(vars_), sandbox, tasks, node.mark, tags=tuple(tags),
            serial=serial, strategy=strategy, max_fail_percentage=max_fail, any_errors_fatal=any_errors_fatal,
        )

    def strategy(self, node: YMap) -> Strategy:
        value = node["strategy"]
        for known in STRATEGIES:
            if value == known:
                return known
        raise InputError(f"unknown strategy {value!r}", node.value_mark("strategy"), allowed=STRATEGIES)

    def flag(self, node: YMap, key: str) -> bool:
        if key not in node:
            return False
        value = node[key]
        if not isinstance(value, bool):
            raise InputError(f"{key} must be true or false, got {shown(value)}", node.value_mark(key),
                             allowed=("true", "false"))
        return value

    def hosts(self, node: YMap) -> str:
        value, mark = node["hosts"], node.value_mark("hosts")
        if isinstance(value, YList):
            parts = [self.host_pattern(v, value.item_mark(i)) for i, v in enumerate(value)]
            if not parts:
                raise InputError("hosts is an empty list", mark)
            return ":".join(parts)
        return self.host_pattern(value, mark)

    def host_pattern(self, value: Any, mark: Mark) -> str:
        if not isinstance(value, str):
            raise InputError(f"hosts must be a pattern string or a list of them, got {describe(value)}", mark)
        if not value.strip():
            raise InputError("hosts is empty; e.g. hosts: all", mark)
        return value.strip()

    def name(self, node: YMap, default: str) -> str:
        if "name" not in node:
            return default
        value, mark = node["name"], node.value_mark("name")
        if value is None or isinstance(value, (dict, list)):
            raise InputError(f"name must be a string, got {describe(value)}", mark)
        return _scalar_text(node, "name", value, mark, "name")

    def vars(self, node: YMap) -> dict[str, Any]:
        vars_node = expect_map(node["vars"], node.value_mark("vars"), "vars")
        for key, value in vars_node.items():
            problem = name_error("a vars key", key) or operator_only(key)
            if problem:
                self.fail(InputError(problem, vars_node.key_mark(key)))
                continue
            self.attempt(None, _check_templates_in, value, vars_node.value_mark(key), f"variable {key!r}")
        out: dict[str, Any] = plain(vars_node)
        return out

    def sandbox(self, node: YMap, origin: SandboxOrigin) -> Optional[SandboxSetting]:
        if "sandbox" not in node:
            return None
        mark = node.value_mark("sandbox")
        _no_template_in_sandbox(node["sandbox"], mark)
        return SandboxSetting(parse_sandbox(node["sandbox"], mark, self.warn), origin, mark)

    # --- tasks ----------------------------------------------------------------------------------

    def task(self, value: Any, mark: Mark, play_sandbox: SandboxSetting, play_tags: tuple[str, ...] = (),
             play_env: _EnvLevel = ({}, {})) -> Optional[Task]:
        """The task, or ``None`` when a mistake in it was recorded (the rest is still checked)."""
        node = expect_map(value, mark, "a task")
        before = len(self.errors)
        self.errors += _unknown_keys(node, TASK_KEYS, "task", _TASK_HINTS)
        exec_spec: Optional[ExecSpec] = None
        if "exec" not in node:
            if not _stands_for(node, TASK_KEYS, _TASK_HINTS, "exec"):
                self.fail(InputError("the task has no 'exec'; every task runs one command: "
                                     "exec: {argv: [program, arg, ...]}", node.mark))
        else:
            exec_spec = self.attempt(None, self.exec_spec, node)
        timeout = exec_spec.timeout if exec_spec is not None else None
        if "timeout" in node:
            if timeout is not None:
                self.fail(InputError("timeout is given both on the task and in exec; keep one",
                                     node.key_mark("timeout")))
            else:
                timeout = self.attempt(None, _positive_number, node["timeout"], node.value_mark("timeout"), "timeout")
        environment = self.attempt(({}, {}), self.env, node, "environment") if "environment" in node else ({}, {})
        sandbox = self.attempt(None, self.sandbox, node, SandboxOrigin.TASK) or play_sandbox
        name = self.attempt("", self.name, node, shlex.join(exec_spec.argv) if exec_spec else "")
        when = self.attempt(None, self.when, node) if "when" in node else None
        loop = self.attempt(None, self.loop, node) if "loop" in node else None
        register = self.attempt(None, self.register, node) if "register" in node else None
        ignore_errors = self.attempt(False, self.flag, node, "ignore_errors")
        failed_when = self.attempt(None, self.when, node, "failed_when") if "failed_when" in node else None
        changed_when = self.attempt(None, self.when, node, "changed_when") if "changed_when" in node else None
        run_once = self.attempt(False, self.flag, node, "run_once")
        tags = tuple(self.attempt((), parse_tags, node["tags"], node.value_mark("tags"))) if "tags" in node else ()
        loop_control = (self.attempt(NO_LOOP_CONTROL, self.loop_control, node) if "loop_control" in node
                        else NO_LOOP_CONTROL)
        if exec_spec is None or len(self.errors) > before:
            return None
        exec_level: _EnvLevel = (dict(exec_spec.env), dict(exec_spec.env_marks))
        for layer in exec_spec.env_layers:  # exec: {env: "{{ my_env }}"}
            if isinstance(layer, EnvTemplate):
                exec_level = layer
        levels = (play_env, environment, exec_level)  # exec.env wins, then the task's, then the play's
        fixed = [level for level in levels if not isinstance(level, EnvTemplate)]
        env = {k: v for entries, _ in fixed for k, v in entries.items()}
        env_marks = {k: m for _, marks in fixed for k, m in marks.items()}
        layers: tuple[EnvLayer, ...] = ()
        if len(fixed) < len(levels):
            layers = tuple(level if isinstance(level, EnvTemplate) else
                           (MappingProxyType(level[0]), MappingProxyType(level[1])) for level in levels)
        exec_spec = ExecSpec(exec_spec.argv, exec_spec.cwd, MappingProxyType(env), timeout,
                             exec_spec.argv_marks, exec_spec.cwd_mark, MappingProxyType(env_marks), layers)
        return Task(
            name=name,
            exec=exec_spec,
            sandbox=sandbox,
            when=when,
            loop=loop,
            register=register,
            ignore_errors=ignore_errors,
            timeout=timeout,
            mark=node.mark,
            failed_when=failed_when,
            changed_when=changed_when,
            run_once=run_once,
            tags=tuple(dict.fromkeys(play_tags + tags)),
            loop_control=loop_control,
            marks=MappingProxyType({k: node.value_mark(k) for k in ("when", "failed_when", "changed_when", "loop")
                                    if k in node}),
        )

    def loop_control(self, node: YMap) -> LoopControl:
        if "loop" not in node:
            raise InputError("loop_control without loop", node.key_mark("loop_control"))
        return parse_loop_control(node["loop_control"], node.value_mark("loop_control"), _check_template)

    def when(self, node: YMap, key: str = "when") -> str:
        value, mark = node[key], node.value_mark(key)
        if isinstance(value, YList):
            if not value:
                raise InputError(f"{key} is an empty list", mark)
            parts = [self.condition(v, value.item_mark(i), key) for i, v in enumerate(value)]
            return parts[0] if len(parts) == 1 else " and ".join(f"({p})" for p in parts)
        return self.condition(value, mark, key)

    def condition(self, value: Any, mark: Mark, key: str = "when") -> str:
        if isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{key} must be an expression (a string), a boolean or a list of them, got "
                             f"{describe(value) if value != '' else 'an empty string'}", mark)
        _check_expression(value, mark, key)
        return value

    def loop(self, node: YMap) -> Any:
        value, mark = node["loop"], node.value_mark("loop")
        if isinstance(value, str) and "{{" in value:
            _check_template(value, mark, "loop")
            return value
        if not isinstance(value, YList):
            raise InputError(f"loop must be a list or a template producing one (\"{{{{ items }}}}\"), got "
                             f"{describe(value)}", mark)
        _no_vault(value, mark, "a loop item")
        _check_templates_in(value, mark, "a loop item")
        return plain(value)

    def register(self, node: YMap) -> str:
        value, mark = node["register"], node.value_mark("register")
        problem = name_error("register", value)
        if problem:
            raise InputError(problem, mark)
        assert isinstance(value, str)
        return value

    # --- exec -----------------------------------------------------------------------------------

    def exec_spec(self, task: YMap) -> Optional[ExecSpec]:
        value, mark = task["exec"], task.value_mark("exec")
        if isinstance(value, str):
            raise InputError("exec must be a mapping with an argv list; a shell string would be parsed by "
                             f"a shell. Write exec: {{argv: {_suggest_argv(value)}}}", mark)
        node = expect_map(value, mark, "exec")
        before = len(self.errors)
        self.errors += _unknown_keys(node, EXEC_KEYS, "exec")
        if "argv" not in node:
            if not _stands_for(node, EXEC_KEYS, {}, "argv"):
                self.fail(InputError("exec has no argv (the program and its arguments, e.g. argv: [echo, hi])",
                                     node.mark))
            argv: tuple[str, ...] = ()
            argv_marks: tuple[Mark, ...] = ()
        else:
            argv, argv_marks = self.attempt(((), ()), self.argv, node)
        cwd = self.attempt(None, self.cwd, node) if "cwd" in node else None
        env_level = self.attempt(({}, {}), self.env, node) if "env" in node else ({}, {})
        timeout = (self.attempt(None, _positive_number, node["timeout"], node.value_mark("timeout"), "exec timeout")
                   if "timeout" in node else None)
        if len(self.errors) > before:
            return None
        env, env_marks = ({}, {}) if isinstance(env_level, EnvTemplate) else env_level
        return ExecSpec(argv, cwd, MappingProxyType(env), timeout, argv_marks,
                        node.value_mark("cwd") if cwd is not None else None, MappingProxyType(env_marks),
                        (env_level,) if isinstance(env_level, EnvTemplate) else ())

    def argv(self, node: YMap) -> tuple[tuple[str, ...], tuple[Mark, ...]]:
        value, mark = node["argv"], node.value_mark("argv")
        if isinstance(value, str):
            raise InputError("argv must be a list; a shell string would be parsed by a shell. "
                             f"Write argv: {_suggest_argv(value)}", mark)
        items = expect_list(value, mark, "argv")
        if not items:
            raise InputError("argv is empty; it needs at least the program: argv: [program, arg, ...]",
                             items.mark)
        argv = [self.attempt("", self.argv_item, items, i) for i in range(len(items))]
        return tuple(argv), tuple(items.item_mark(i) for i in range(len(items)))

    def argv_item(self, items: YList, i: int) -> str:
        item_mark = items.item_mark(i)
        text = _scalar_text(items, i, items[i], item_mark, f"argv item {i + 1}")
        if i == 0 and not text:
            raise InputError("argv[0] (the program) is an empty string", item_mark)
        _check_template(text, item_mark, f"argv item {i + 1}")
        hint = _argv_symbol_hint(text)
        if hint:
            self.warn(hint, item_mark)
        return text

    def cwd(self, node: YMap) -> str:
        value, mark = node["cwd"], node.value_mark("cwd")
        forms = (":workspace_roots", ":workspace_roots/sub", "/absolute/path", "C:\\path", "~/sub",
                 "a {{ template }}")
        if not isinstance(value, str):
            raise InputError(f"cwd must be a string, got {describe(value)}", mark, allowed=forms)
        if "\0" in value:
            raise InputError("cwd contains a NUL character", mark)
        if any(d in value for d in TEMPLATE_START):
            _check_template(value, mark, "cwd")  # checked again, as a path, once rendered on the host
        elif value.startswith(":workspace_roots/"):
            check_subpath(value[len(":workspace_roots/"):], value, mark)
        elif value.startswith("~/"):
            check_subpath(value[2:], value, mark)
        elif value in (":workspace_roots", "~"):
            pass
        elif value.startswith(":"):
            raise InputError(f"cwd {value!r}: the only symbol a cwd may use is :workspace_roots[/sub]", mark,
                             allowed=forms)
        elif looks_absolute(value):
            native_path_uri(value, mark, "cwd")
        else:
            raise InputError(f"cwd {value!r} must be absolute, a symbol or a template (a relative cwd "
                             "would depend on where the agent happens to start)", mark, allowed=forms)
        return value

    def env(self, node: YMap, what: str = "env") -> _EnvLevel:
        """``exec.env`` or an ``environment:`` (``what``, the key): NAME -> a template, each value
        marked; or one template that must render to such a mapping (checked once rendered)."""
        value, mark = node[what], node.value_mark(what)
        if isinstance(value, str):
            if isinstance(value, UnsafeText) or not any(d in value for d in TEMPLATE_START):
                raise InputError(f"{what} must be a mapping of NAME: value, or one template giving such a mapping, "
                                 f"got the text {shown(value)}", mark,
                                 allowed=("{NAME: value, ...}", '"{{ my_env }}" (a mapping variable)'))
            _check_template(value, mark, what)
            return EnvTemplate(value, mark, what)
        env_node = expect_map(value, mark, what)
        env: dict[str, str] = {}
        marks: dict[str, Mark] = {}
        for key in env_node:
            item = self.attempt(None, self.env_item, env_node, key, what)
            if item is not None:
                env[key], marks[key] = item, env_node.value_mark(key)
        return env, marks

    def env_item(self, env_node: YMap, key: Any, what: str) -> str:
        key_mark = env_node.key_mark(key)
        if not isinstance(key, str):
            raise InputError(f"{what} name {key!r} must be a string, got {describe(key)}; quote it",
                             key_mark)
        if not key or "=" in key or "\0" in key:
            raise InputError(f"{what} name {key!r} is invalid: it must be non-empty, without '=' or NUL",
                             key_mark)
        value_mark = env_node.value_mark(key)
        text = _scalar_text(env_node, key, env_node[key], value_mark, f"{what} {key}")
        _check_template(text, value_mark, f"{what} {key}")
        return text


#: What a ``:symbol`` written in argv is, and how to get that path there instead (issue 19: an
#: argv item ``:workspace_roots`` created a directory of that very name).
_ARGV_SYMBOL_WAYS = {
    "workspace_roots": "set cwd: \":workspace_roots\" and use a relative path, or write "
                       "\"{{ sandfleet_facts.workspace_roots[0] }}\" (the host's first workspace root)",
    "home": "write \"{{ sandfleet_facts.home }}\"",
    "root": "write /",
    "tmpdir": "the task's private temp dir is in its TMPDIR environment variable (argv is not expanded: "
              "run [sh, -c, '... \"$TMPDIR\"'] or have the program read TMPDIR)",
    "slash_tmp": "write /tmp",
    "minimal": "name the path itself",
}
_ARGV_SYMBOL = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)(?:/.*)?", re.S)


def _argv_symbol_hint(text: str) -> Optional[str]:
    """A warning for an argv item that is a sandbox ``:symbol`` (``:workspace_roots/sub``): symbols
    are bound only in ``cwd`` and the sandbox's ``filesystem`` keys; in argv it is literal text."""
    m = _ARGV_SYMBOL.fullmatch(text)
    if m is None or m.group(1) not in _ARGV_SYMBOL_WAYS:
        return None
    return (f"argv item {text!r} is passed to the program as this very text: symbols such as "
            f":{m.group(1)} are bound to the host's paths only in cwd and in the sandbox's filesystem keys, "
            f"never in argv; to pass that path, {_ARGV_SYMBOL_WAYS[m.group(1)]}")


def _suggest_argv(command: str) -> str:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    text = _flow_list(words or ["program", "arg"])
    if _SHELL_CHARS.search(command):
        text += " (for pipes, redirection or $(...), run a shell explicitly: [sh, -c, '...'])"
    return text
