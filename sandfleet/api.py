"""sandfleet from Python: run playbooks and single commands on a fleet, or keep a fleet open.

Everything here is what the command line does, with the same checks: a playbook, a command and a
:class:`Sandbox` are validated exactly as a playbook file is (an :class:`~sandfleet.errors.InputError`
names what is wrong and what is allowed), the operator's policy (the inventory's
``sandfleet_policy`` and ``policy=``) bounds every task, and what a host refuses comes back as a
result (``denied``, ``sandbox_unavailable``), never as an exception. Results are frozen: the
records ``--format json`` prints (:meth:`TaskResult.to_json`), grouped by host.

Exceptions, one tree: :class:`~sandfleet.errors.SandfleetError`, with
:class:`~sandfleet.errors.InputError` (a playbook, inventory, policy, command or sandbox that is
wrong: ``.message``, ``.mark``, ``.allowed``; a playbook with several mistakes raises one error
whose ``.errors`` lists every one, in file order, the error itself being the first) and
:class:`~sandfleet.errors.UsageError` (arguments that cannot go together). Hosts that cannot be
reached are results (:attr:`HostResult.unreachable`).
``argv``, ``cwd`` and ``env`` are templates, as in a playbook: ``{{ inventory_hostname }}``
works, and a literal ``{{`` is written ``{{ '{{' }}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO, Union

# Not imported lazily (~2.5 ms): the first import of the module sandfleet.doctor sets the package's
# attribute ``sandfleet.doctor``, which must stay the function :func:`doctor` once it was looked up.
from sandfleet.doctor import DoctorResult, HostFactsResult, HostReport
from sandfleet.errors import InputError, UsageError
from sandfleet.inventory import HostConfig, Inventory
from sandfleet.inventory import load_inventory as _load_inventory
from sandfleet.load.extra_vars import parse_extra_vars
from sandfleet.load.keywords import TagFilter
from sandfleet.load.playbook import Playbook, load_playbook, load_playbook_data, task_position
from sandfleet.load.policies import load_policy_file
from sandfleet.report.atomic import write_atomic
from sandfleet.report.events import Reporter, TaskEvent, TaskStatus
from sandfleet.report.jsonl import dumps, task_result
from sandfleet.report.outputs import OutputFormat, OutputOptions, Outputs, make_reporter
from sandfleet.report.recap import Recap
from sandfleet.run.scheduler import HostSet
from sandfleet.transports.base import Connection
from sandfleet.transports.hostkeys import REJECT, HostKeyPolicy
from sandfleet_agent.portable.policy import Policy

# What a plain run does not use is imported where it is used: the results directory, the
# dry-run, slicing and the local connection (each import is on every run's critical path).
if TYPE_CHECKING:
    from sandfleet.run.slicing import Slice

PathLike = Union[str, "os.PathLike[str]"]
#: A task's sandbox: a :class:`Sandbox`, ``True`` for the default one (workspace profile,
#: network none), ``False`` for none at all (the policy must allow unsandboxed tasks), or a
#: playbook's ``sandbox:`` block as plain data (``sandfleet serve`` passes its callers' on).
SandboxArg = Union["Sandbox", bool, dict[str, Any]]


def load_inventory(sources: Union[PathLike, Sequence[PathLike]]) -> Inventory:
    """An inventory from one source or several (files, directories, ``host1,host2,`` lists), as ``-i``."""
    paths = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    return _load_inventory([os.fspath(p) for p in paths])


@dataclass(frozen=True)
class Sandbox:
    """A task's sandbox intent, written as a playbook's ``sandbox:`` block is (docs/sandbox.md).

    ``network`` is ``"none"``, ``"full"`` or the domains a managed network may reach
    (``["pypi.org", "*.pythonhosted.org"]``). Checked when made: a mistake raises
    :class:`~sandfleet.errors.InputError` with what is allowed.
    """

    profile: Optional[str] = "workspace"
    filesystem: Mapping[str, str] = field(default_factory=dict)
    network: Union[str, Sequence[str]] = "none"
    workspace_roots: Sequence[str] = ()
    limits: Mapping[str, Union[int, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        load_playbook_data([{"hosts": "all", "sandbox": self.as_block(), "tasks": [{"exec": {"argv": ["true"]}}]}],
                           "Sandbox(...)")

    def as_block(self) -> dict[str, Any]:
        """The ``sandbox:`` mapping a playbook would hold."""
        block: dict[str, Any] = {}
        if self.profile is not None:
            block["profile"] = self.profile
        if self.filesystem:
            block["filesystem"] = dict(self.filesystem)
        # Only a list of domains is shorthand; anything else (a {allow, deny} mapping, a wrong
        # type) goes to the loader as written, which accepts it or says what is allowed.
        block["network"] = {"allow": list(self.network)} if isinstance(self.network, (list, tuple)) else self.network
        if self.workspace_roots:
            block["workspace_roots"] = list(self.workspace_roots)
        if self.limits:
            block["limits"] = dict(self.limits)
        return block


@dataclass(frozen=True)
class TaskResult:
    """One task (or loop item) on one host: the ``task_result`` record ``--format json`` prints."""

    host: str
    play: str
    task: str
    status: TaskStatus
    rc: Optional[int]
    stdout: str
    stderr: str
    backend: Optional[str]
    message: Optional[str]
    changed: bool
    ignored: bool
    record: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status is TaskStatus.OK

    def to_json(self) -> dict[str, Any]:
        # The line --format json prints, parsed: plain JSON values (lists, not tuples; str, not
        # enums), equal to the CLI's record, and a deep copy the caller may change.
        return json.loads(dumps(dict(self.record)))  # type: ignore[no-any-return]

    @classmethod
    def of(cls, event: TaskEvent, dry_run: bool = False) -> TaskResult:
        r = event.result
        return cls(event.host, event.play, event.display_name, event.status, r.rc if r else None,
                   r.stdout if r else "", r.stderr if r else "", r.backend if r else None, r.message if r else None,
                   event.changed, event.ignored, MappingProxyType(task_result(event, dry_run)))


@dataclass(frozen=True)
class HostResult:
    """What one host did: its task results in order, and why it was given up, if it was."""

    name: str
    tasks: tuple[TaskResult, ...] = ()
    unreachable: Optional[str] = None

    @property
    def ok(self) -> bool:
        """Reached, and nothing failed that was not ignored."""
        return self.unreachable is None and all(t.status is TaskStatus.SKIPPED or t.ok or t.ignored
                                                for t in self.tasks)


@dataclass(frozen=True)
class RunResult:
    """A whole run: each targeted host's result (inventory order), the exit code the command line
    would give (0 ok; bits 2 failed, 4 unreachable, 8 no sandbox, 16 denied; 1 when no play of a
    playbook matched any host, so nothing ran) and why it stopped early, if it did
    (``any_errors_fatal``, ``max_fail_percentage``)."""

    exit_code: int
    hosts: Mapping[str, HostResult]
    aborted: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class _Collector(Reporter):
    """Keeps every event per host for the result and hands each to the caller's ``on_event``."""

    def __init__(self, dry_run: bool, on_event: Optional[Callable[[TaskResult], None]]) -> None:
        self.dry_run, self.on_event = dry_run, on_event
        self.tasks: dict[str, list[TaskResult]] = {}
        self.unreachable: dict[str, str] = {}
        self._lock = threading.Lock()

    def play_start(self, play: Any, hosts: list[str]) -> None:
        with self._lock:
            for host in hosts:
                self.tasks.setdefault(host, [])

    def task_event(self, event: TaskEvent) -> None:
        result = TaskResult.of(event, self.dry_run)
        with self._lock:
            self.tasks.setdefault(event.host, []).append(result)
        if self.on_event is not None:
            self.on_event(result)

    def host_unreachable(self, host: str, message: str) -> None:
        with self._lock:
            self.unreachable.setdefault(host, message)
            self.tasks.setdefault(host, [])

    def result(self, recap: Recap) -> RunResult:
        hosts = {h: HostResult(h, tuple(tasks), self.unreachable.get(h)) for h, tasks in self.tasks.items()}
        aborted = f"{recap.aborted.play}: {recap.aborted.reason}" if recap.aborted else None
        return RunResult(recap.exit_code(), MappingProxyType(hosts), aborted)


def _connector(host_key_policy: HostKeyPolicy, ssh_config: Optional[str],
               become_password: Optional[str] = None) -> Callable[[HostConfig], Connection]:
    """The connection factory of a real run. The SSH side (paramiko, ssh_config, known_hosts) is
    imported and set up once, on the first ssh host: local-only runs never pay for it.
    ``become_password`` (``--ask-become-pass``) is for become hosts whose inventory gives none
    (the inventory's ``ansible_become_password`` wins, as in Ansible)."""
    ssh: list[Any] = []
    lock = threading.Lock()

    def connect(config: HostConfig) -> Connection:
        if config.connection == "local":
            passthrough = (config.policy.env_passthrough or ()) if config.policy else ()
            from sandfleet.transports.local import LocalConnection  # an ssh fleet never uses it

            return LocalConnection(config.name, passthrough=passthrough)
        if become_password is not None and config.become_user is not None and config.become_password is None:
            config = dataclasses.replace(config, become_password=become_password)
        with lock:
            if not ssh:
                from sandfleet.transports.ssh import SshConnector

                ssh.append(SshConnector(host_key_policy, ssh_config))
        return ssh[0](config)  # type: ignore[no-any-return]

    return connect


def _policy(policy: Union[PathLike, Policy, None]) -> Optional[Policy]:
    return load_policy_file(os.fspath(policy)) if isinstance(policy, (str, os.PathLike)) else policy


def _inventory(inventory: Union[Inventory, PathLike, Sequence[PathLike]]) -> Inventory:
    return inventory if isinstance(inventory, Inventory) else load_inventory(inventory)


def _extra_vars(extra_vars: Union[Mapping[str, Any], Sequence[str], None]) -> dict[str, Any]:
    """A mapping as given, or ``-e`` words (``k=v``, YAML/JSON, ``@file``); names checked either way."""
    if extra_vars is None:
        return {}
    if isinstance(extra_vars, Mapping):
        return parse_extra_vars([_yaml_of(dict(extra_vars))])
    return parse_extra_vars(list(extra_vars))


def _yaml_of(data: Any) -> str:
    import json

    return json.dumps(data)  # JSON is YAML: the -e reader takes it, with its name checks


@dataclass(frozen=True)
class _Job:
    """How to run, shared by run_playbook, run_command and open_fleet."""

    inventory: Inventory
    limit: Optional[str]
    forks: Optional[int]
    extra_vars: dict[str, Any]
    policy: Optional[Policy]
    allow_unsandboxed: bool
    dry_run: bool
    connect: Callable[[HostConfig], Connection]

    def hosts(self, targets: list[str], playbook_dir: str, fleet_vars: bool = True) -> HostSet:
        # One worker for a dry-run: rendering is pure CPU under the GIL, so host threads only add
        # switching (1,000 hosts x 10 tasks: 2.2 s with 20, 1.7 s with one), and the output
        # comes in inventory order, the same every time.
        return HostSet(self.inventory, targets, self.connect, forks=1 if self.dry_run else self.forks,
                       consent=self.allow_unsandboxed, extra_vars=self.extra_vars, policy=self.policy,
                       playbook_dir=playbook_dir, fleet_vars=fleet_vars)


def _job(inventory: Union[Inventory, PathLike, Sequence[PathLike]], *, limit: Optional[str], forks: Optional[int],
         extra_vars: Union[Mapping[str, Any], Sequence[str], None], policy: Union[PathLike, Policy, None],
         allow_unsandboxed: bool, dry_run: bool, host_key_policy: HostKeyPolicy, ssh_config: Optional[str],
         become_password: Optional[str] = None) -> _Job:
    if forks is not None and forks < 1:
        raise UsageError(f"forks must be a positive number, got {forks}")
    connect: Callable[[HostConfig], Connection]
    if dry_run:
        from sandfleet.run.dry import DryConnection  # a real run does not render on the controller

        connect = DryConnection
    else:
        connect = _connector(host_key_policy, ssh_config, become_password)
    return _Job(_inventory(inventory), limit, forks, _extra_vars(extra_vars), _policy(policy), allow_unsandboxed,
                dry_run, connect)


def _play(job: _Job, playbook: Playbook, outputs: Outputs, collector: _Collector, tags: TagFilter,
          hosts: Optional[HostSet] = None, no_hosts_fails: bool = False,
          start: Optional[tuple[int, int]] = None, part: Optional[Slice] = None,
          on_warning: Optional[Callable[[str], None]] = None) -> RunResult:
    """Run ``playbook`` on the job's hosts (or an open fleet's), every output fed; on Ctrl-C the
    outputs still write what they have (the partial recap, JUnit, results dir) before it goes on.
    ``no_hosts_fails``: a run in which no play matched any host exits 1. ``part``: only that
    slice's hosts (decided on every play's hosts, before any runs: docs/slicing.md)."""
    targets = [job.inventory.select(play.hosts, job.limit) for play in playbook.plays]
    outputs.recap.no_hosts = no_hosts_fails and not any(targets)
    if part is not None:
        targets = _slice_targets(playbook, targets, part, outputs, tags, start, on_warning)
    own = hosts is None
    if hosts is None:
        hosts = job.hosts(list(dict.fromkeys(h for t in targets for h in t)),
                          os.path.dirname(os.path.abspath(playbook.path)))
    try:
        hosts.play(playbook, targets, outputs, tags, start)
    except KeyboardInterrupt:
        from sandfleet.report.results_dir import ResultsDirReporter  # imported only with --results-dir

        outputs.stop_live()  # so what follows gets a line of its own on a terminal
        for output in outputs.outputs:
            if isinstance(output, ResultsDirReporter):
                output.interrupted = True  # a slice's summary says so: merge never shows it green
        outputs.finish()
        raise
    except BaseException:
        outputs.stop_live()
        raise
    finally:
        if own:
            hosts.close()
    outputs.finish()
    return collector.result(outputs.recap)


def _parse_slice(value: Union[str, tuple[int, int]]) -> Slice:
    from sandfleet.run.slicing import parse_slice  # only a sliced run needs it

    return parse_slice(value, os.environ)


def _slice_targets(playbook: Playbook, targets: list[list[str]], part: Slice, outputs: Outputs, tags: TagFilter,
                   start: Optional[tuple[int, int]], on_warning: Optional[Callable[[str], None]]) -> list[list[str]]:
    """Each play's hosts in this slice; a results directory is told, so its summary lets
    ``sandfleet merge`` check the slices belong together."""
    from sandfleet.report.results_dir import ResultsDirReporter  # imported only with --results-dir
    from sandfleet.run.slicing import plan as slice_plan

    sliced, shape = slice_plan(playbook, targets, part, tags, start)
    for output in outputs.outputs:
        if isinstance(output, ResultsDirReporter):
            output.sliced(shape)
    mine = len(shape.assigned)
    note = f"sandfleet: slice {part} ({part.source}): {mine} of the run's {shape.targeted} host(s)"
    if not mine and shape.targeted:
        note += "; none falls in this slice (more slices than hosts), so it runs nothing and exits 0"
    if on_warning is not None:
        on_warning(note)
    return sliced


def _outputs(dry_run: bool, on_event: Optional[Callable[[TaskResult], None]], output: Optional[TextIO],
             format: OutputFormat, verbose: bool, junit: Optional[str], results_dir: Optional[str],
             report: Optional[str] = None) -> tuple[Outputs, _Collector]:
    collector = _Collector(dry_run, on_event)
    shown = make_reporter(OutputOptions(format, dry_run, verbose, junit, results_dir, report),
                          output or io.StringIO()) if output is not None or junit or results_dir or report else None
    if shown is None:
        return Outputs(Recap(), [collector]), collector
    if output is None:  # files only: the stdout format is not wanted
        shown.outputs.pop(0)
    shown.outputs.insert(0, collector)
    return shown, collector


def run_playbook(playbook: Union[PathLike, Playbook], inventory: Union[Inventory, PathLike, Sequence[PathLike]], *,
                 limit: Optional[str] = None, forks: Optional[int] = None,
                 extra_vars: Union[Mapping[str, Any], Sequence[str], None] = None,
                 tags: Optional[Sequence[str]] = None, skip_tags: Optional[Sequence[str]] = None,
                 start_at_task: Optional[str] = None, dry_run: bool = False,
                 policy: Union[PathLike, Policy, None] = None, allow_unsandboxed: bool = False,
                 host_key_policy: HostKeyPolicy = REJECT, ssh_config: Optional[str] = None,
                 become_password: Optional[str] = None,
                 on_event: Optional[Callable[[TaskResult], None]] = None,
                 on_warning: Optional[Callable[[str], None]] = None, output: Optional[TextIO] = None,
                 format: OutputFormat = "text", verbose: bool = False, junit: Optional[str] = None,
                 results_dir: Optional[str] = None, report: Optional[str] = None,
                 slice: Union[str, tuple[int, int], None] = None) -> RunResult:
    """Run a playbook (a path, or a loaded :class:`Playbook`) on its hosts, as ``sandfleet run``.

    ``on_event`` gets each task result as it arrives (from host threads); ``output`` also prints
    the run there in ``format`` (text or JSON lines), ``junit`` and ``results_dir`` write those
    files, ``report`` a self-contained HTML page (timeline per host, recap, failures, policy).
    Warnings about the playbook go to ``on_warning`` (default: dropped), with Ansible's
    ``[WARNING]: Could not match supplied host pattern, ignoring: TERM`` for each term of a play's
    pattern that matches no host; a run in which no play matched any host exits 1.
    ``start_at_task`` skips every task before the first one with that name (or matching it as a
    glob), across plays, as ``ansible-playbook --start-at-task``; an unknown name is a
    :class:`~sandfleet.errors.UsageError` listing close names. An invalid playbook raises one
    :class:`~sandfleet.errors.InputError` carrying every mistake of the file (``.errors``, each
    with its ``.mark`` and ``.allowed``, in file order; ``str()`` is one line each), as
    ``sandfleet run`` and ``sandfleet check`` print them. ``become_password`` answers sudo on
    hosts with ``ansible_become`` whose inventory gives no ``ansible_become_password``
    (``--ask-become-pass``); it is sent to sudo's prompt only, when sudo asks.

    ``slice`` runs only one slice of the hosts, as ``--slice`` (docs/slicing.md): ``"K/N"`` or
    ``(K, N)`` (K from 1), ``"auto"`` (K and N from a job engine's variables in ``os.environ``:
    GitLab, Buildkite, CircleCI) or ``"auto/N"`` (K only: a Kubernetes Indexed Job's
    ``JOB_COMPLETION_INDEX``); a mistake is a :class:`~sandfleet.errors.UsageError`. Every process
    given the same playbook, inventory and ``limit`` splits the hosts the same way; ``on_warning``
    also gets which slice this is and how many hosts it has, and a warning for each ``run_once``
    task (it runs once per slice). :func:`merge_results` combines the slices' ``results_dir``.
    """
    part = None if slice is None else _parse_slice(slice)
    job = _job(inventory, limit=limit, forks=forks, extra_vars=extra_vars, policy=policy,
               allow_unsandboxed=allow_unsandboxed, dry_run=dry_run, host_key_policy=host_key_policy,
               ssh_config=ssh_config, become_password=become_password)
    book = playbook if isinstance(playbook, Playbook) else load_playbook(os.fspath(playbook))
    if os.path.isfile(book.path):  # the group_vars/ and host_vars/ beside it, as Ansible reads them
        job = dataclasses.replace(job, inventory=job.inventory.beside_playbook(os.path.dirname(
            os.path.abspath(book.path))))
    start = None if start_at_task is None else start_position(book, start_at_task)
    warnings = [str(w) for w in book.warnings]
    if part is not None:
        from sandfleet.run.slicing import run_once_warnings

        warnings += run_once_warnings(book, part)
    warnings += [f"{task.mark}: warning: register: {task.register} is also given with -e; extra vars win, "
                 "so later tasks see the -e value, not this task's result"
                 for play in book.plays for task in play.tasks if task.register in job.extra_vars]
    warnings += _unmatched_warnings(book, job.inventory, job.limit)
    for warning in warnings:
        if on_warning is not None:
            on_warning(warning)
    outputs, collector = _outputs(dry_run, on_event, output, format, verbose, junit, results_dir, report)
    return _play(job, book, outputs, collector, TagFilter.from_cli(None if tags is None else list(tags),
                                                                None if skip_tags is None else list(skip_tags)),
                 no_hosts_fails=True, start=start, part=part, on_warning=on_warning)


def start_position(playbook: Playbook, name: str) -> tuple[int, int]:
    """The play and task index ``--start-at-task NAME`` starts at; a name no task has is a
    :class:`~sandfleet.errors.UsageError` naming the closest ones."""
    position = task_position(playbook, name)
    if position is not None:
        return position
    names = list(dict.fromkeys(task.name for play in playbook.plays for task in play.tasks))
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UsageError(f"--start-at-task {name!r}: no task of {playbook.path} has that name{hint}")


def _unmatched_warnings(playbook: Playbook, inventory: Inventory, limit: Optional[str]) -> list[str]:
    """Ansible's warning for each term of a play's pattern or of ``--limit`` (``@file`` aside)
    that matches no host, once per term."""
    patterns = [play.hosts for play in playbook.plays] + ([limit] if limit else [])
    terms = dict.fromkeys(t for p in patterns for t in inventory.unmatched_terms(p) if not t.startswith("@"))
    return [f"[WARNING]: Could not match supplied host pattern, ignoring: {term}" for term in terms]


def command_playbook(argv: Sequence[str], hosts: str, *, sandbox: SandboxArg = True, cwd: Optional[str] = None,
                     env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
                     name: Optional[str] = None, source: str = "run_command") -> Playbook:
    """One command as a one-task playbook, checked exactly as a playbook file would be."""
    if isinstance(argv, (str, bytes)):
        raise InputError("argv must be a list of words, not one string (nothing here goes through a shell)",
                         allowed=["['python3', '-m', 'pytest']"])
    # Python values would otherwise pass through YAML: True -> 'true', b'x' -> base64 'eA=='.
    for i, word in enumerate(argv, 1):
        if not isinstance(word, str):
            raise InputError(f"{source}: argv item {i} must be a string, got {type(word).__name__} {word!r}",
                             allowed=["a list of str: ['sleep', '1'], [sys.executable, '-c', code]"])
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InputError(f"{source}: env {key!r} must map a string to a string, got "
                             f"{type(key).__name__} -> {type(value).__name__}", allowed=["{'NAME': 'text'}"])
    exec_: dict[str, Any] = {"argv": list(argv)}
    if cwd is not None:
        exec_["cwd"] = cwd
    if env:
        exec_["env"] = dict(env)
    task: dict[str, Any] = {"exec": exec_}
    if name is not None:
        task["name"] = name
    if timeout is not None:
        task["timeout"] = timeout
    play: dict[str, Any] = {"hosts": hosts, "tasks": [task]}
    if sandbox is not True:
        play["sandbox"] = sandbox.as_block() if isinstance(sandbox, Sandbox) else sandbox
    return load_playbook_data([play], source)


def run_command(argv: Sequence[str], *, hosts: str = "all",
                inventory: Union[Inventory, PathLike, Sequence[PathLike]], sandbox: SandboxArg = True,
                cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
                name: Optional[str] = None, limit: Optional[str] = None, forks: Optional[int] = None,
                extra_vars: Union[Mapping[str, Any], Sequence[str], None] = None, dry_run: bool = False,
                policy: Union[PathLike, Policy, None] = None, allow_unsandboxed: bool = False,
                host_key_policy: HostKeyPolicy = REJECT, ssh_config: Optional[str] = None,
                become_password: Optional[str] = None,
                on_event: Optional[Callable[[TaskResult], None]] = None,
                on_warning: Optional[Callable[[str], None]] = None, output: Optional[TextIO] = None,
                format: OutputFormat = "text", verbose: bool = False,
                slice: Union[str, tuple[int, int], None] = None) -> RunResult:
    """Run one command on every host ``hosts`` (a pattern) selects: a one-task playbook, with
    the same checks, policy and result. As for :func:`run_playbook`, each term of ``hosts`` or
    ``limit`` that matches no host is warned about (``on_warning``, Ansible's ``[WARNING]: Could
    not match supplied host pattern, ignoring: TERM``), and when no host is selected nothing runs
    and the exit code is 1; ``slice`` runs one slice of the hosts, as there."""
    part = None if slice is None else _parse_slice(slice)
    job = _job(inventory, limit=limit, forks=forks, extra_vars=extra_vars, policy=policy,
               allow_unsandboxed=allow_unsandboxed, dry_run=dry_run, host_key_policy=host_key_policy,
               ssh_config=ssh_config, become_password=become_password)
    book = command_playbook(argv, hosts, sandbox=sandbox, cwd=cwd, env=env, timeout=timeout, name=name)
    for warning in _unmatched_warnings(book, job.inventory, job.limit):
        if on_warning is not None:
            on_warning(warning)
    outputs, collector = _outputs(dry_run, on_event, output, format, verbose, None, None)
    return _play(job, book, outputs, collector, TagFilter(), no_hosts_fails=True, part=part, on_warning=on_warning)


class Fleet:
    """Hosts kept open between commands: one connection and one agent per host, started on its
    first command and reused by every later one (the persistent sandboxes with them). Made by
    :func:`open_fleet`; closing it (or leaving the ``with`` block) releases every host."""

    def __init__(self, job: _Job, hosts: list[str], pattern: str = "all") -> None:
        self._job, self.hosts, self._pattern = job, tuple(hosts), pattern
        self._dir = os.getcwd()
        self._set = job.hosts(hosts, self._dir, fleet_vars=False)  # no hostvars: docs/variables.md
        self._lock = threading.Lock()
        self._count = 0
        self._stop_lock = threading.Lock()  # cancel() against the start and end of a command
        self._running: Optional[tuple[Recap, str]] = None  # the command's recap and play name

    def run(self, argv: Sequence[str], *, hosts: Optional[str] = None, sandbox: SandboxArg = True,
            cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
            name: Optional[str] = None, on_event: Optional[Callable[[TaskResult], None]] = None,
            on_warning: Optional[Callable[[str], None]] = None) -> RunResult:
        """One command on the fleet's hosts (or those of them ``hosts`` selects); one command at a
        time per fleet (a second caller waits). As for :func:`run_command`, a term of ``hosts``
        that matches no host is warned about (``on_warning``), and a command that selects no host
        runs nothing, exits 1 and warns with the pattern that left none."""
        with self._lock:
            self._count += 1
            book = command_playbook(argv, "all", sandbox=sandbox, cwd=cwd, env=env, timeout=timeout, name=name,
                                    source=f"fleet.run#{self._count}")
            targets = list(self.hosts) if hosts is None else [
                h for h in self._job.inventory.select(hosts, None) if h in self.hosts]
            if on_warning is not None:
                for warning in self._no_host_warnings(hosts, targets):
                    on_warning(warning)
            collector = _Collector(self._job.dry_run, on_event)
            outputs = Outputs(Recap(), [collector])
            outputs.recap.targeted(targets)
            outputs.recap.no_hosts = not targets
            with self._stop_lock:
                self._running = (outputs.recap, book.plays[0].name)
            try:
                self._set.play(book, [targets], outputs)
            finally:
                with self._stop_lock:
                    self._running = None
                    if self._set.stopping.is_set():  # cancelled (or Ctrl-C): its connections are closed
                        self._set.close()
                        self._set = self._job.hosts(list(self.hosts), self._dir, fleet_vars=False)
            return collector.result(outputs.recap)

    def _no_host_warnings(self, hosts: Optional[str], targets: list[str]) -> list[str]:
        warnings = [f"[WARNING]: Could not match supplied host pattern, ignoring: {term}"
                    for term in (self._job.inventory.unmatched_terms(hosts) if hosts is not None else ())]
        if not targets and hosts is not None and self.hosts:
            warnings.append(f"[WARNING]: the pattern {hosts!r} matches no host of this fleet "
                            f"({', '.join(self.hosts)}); nothing ran")
        elif not targets:
            limit = f" with limit {self._job.limit!r}" if self._job.limit else ""
            warnings.append(f"[WARNING]: this fleet has no host: its pattern {self._pattern!r}{limit} matched none; "
                            "nothing ran")
        return warnings

    def cancel(self) -> bool:
        """Stop the command :meth:`run` is running (call it from another thread) as Ctrl-C stops
        a run: each host's connection is closed, so its agent kills the command's process group
        and exits. That :meth:`run` returns what finished and, for each command it killed, a
        ``cancelled`` result, with ``aborted`` set; the fleet stays open, each host starting a new
        agent on its next command. False if nothing was running."""
        with self._stop_lock:
            if self._running is None:
                return False
            recap, play = self._running
            recap.abort(play, "cancelled; the running commands were killed")  # the first abort stands
            self._set.interrupt()  # each running command is recorded ``cancelled``, then killed
            return True

    def close(self) -> None:
        """Release every host: each agent exits and takes its persistent sandboxes with it."""
        self._set.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_fleet(inventory: Union[Inventory, PathLike, Sequence[PathLike]], hosts: str = "all", *,
               limit: Optional[str] = None, forks: Optional[int] = None,
               extra_vars: Union[Mapping[str, Any], Sequence[str], None] = None, dry_run: bool = False,
               policy: Union[PathLike, Policy, None] = None, allow_unsandboxed: bool = False,
               host_key_policy: HostKeyPolicy = REJECT, ssh_config: Optional[str] = None,
               become_password: Optional[str] = None) -> Iterator[Fleet]:
    """The hosts ``hosts`` selects, kept open for many commands (:meth:`Fleet.run`)."""
    job = _job(inventory, limit=limit, forks=forks, extra_vars=extra_vars, policy=policy,
               allow_unsandboxed=allow_unsandboxed, dry_run=dry_run, host_key_policy=host_key_policy,
               ssh_config=ssh_config, become_password=become_password)
    fleet = Fleet(job, job.inventory.select(hosts, limit), hosts)
    try:
        yield fleet
    finally:
        fleet.close()


#: The trial command of :func:`doctor`: ``/bin/sh -c 'exit 0'`` (``cmd.exe /c exit 0`` on Windows),
#: a template so one command fits every OS of a fleet. An absolute path: the verdict is about the
#: sandbox, so it must not hang on the agent's PATH (a bare ``true`` was not found with an empty one).
_TRIAL_ARGV = ("{{ 'cmd.exe' if sandfleet_facts.os == 'windows' else '/bin/sh' }}",
               "{{ '/c' if sandfleet_facts.os == 'windows' else '-c' }}", "exit 0")


def doctor(inventory: Union[Inventory, PathLike, Sequence[PathLike], None] = None, hosts: str = "all", *,
           limit: Optional[str] = None, forks: Optional[int] = None, policy: Union[PathLike, Policy, None] = None,
           host_key_policy: HostKeyPolicy = REJECT, ssh_config: Optional[str] = None,
           become_password: Optional[str] = None) -> DoctorResult:
    """What sandboxing can work on each host ``hosts`` selects (this machine, through a local agent,
    when ``inventory`` is None), why not, and the fix (:mod:`sandfleet.doctor`). Each host's agent
    starts as for a run and reports its facts; then one trial command (``/bin/sh -c 'exit 0'``)
    runs under the default sandbox intent and the operator's policy, which proves whether that
    intent can be enforced there. ``DoctorResult.exit_code``: 0 yes everywhere; bits 4 unreachable, 8 cannot,
    16 a policy refuses it; 1 when ``hosts`` (and ``limit``) select no host."""
    from sandfleet.doctor import Trial, diagnose

    inv = load_inventory([","]) if inventory is None else _inventory(inventory)  # "," : no host but localhost
    with open_fleet(inv, "localhost" if inventory is None else hosts, limit=limit, forks=forks, policy=policy,
                    host_key_policy=host_key_policy, ssh_config=ssh_config,
                    become_password=become_password) as fleet:
        for run in fleet._set.runs.values():
            run.fresh_facts = True  # the host as it is now, never an agent's kept verdict
        result = fleet.run(list(_TRIAL_ARGV), name="sandfleet doctor: the default sandbox", timeout=60)
        reports = {}
        for name in fleet.hosts:
            run, done = fleet._set.runs[name], result.hosts.get(name)
            task = done.tasks[0] if done is not None and done.tasks else None
            trial = None if task is None else Trial(
                str(task.status), task.backend, task.message, tuple(task.record.get("policy_sources") or ()),
                task.record.get("limits_mechanism"))
            reports[name] = diagnose(name, run.facts, trial=trial, pin=run.config.sandbox_pin,
                                     linux_backends=run.policy.linux_backends,
                                     unreachable=done.unreachable if done is not None else None)
    return DoctorResult(MappingProxyType(reports))


def facts(inventory: Union[Inventory, PathLike, Sequence[PathLike]], hosts: str = "all", *,
          limit: Optional[str] = None, forks: Optional[int] = None, host_key_policy: HostKeyPolicy = REJECT,
          ssh_config: Optional[str] = None, become_password: Optional[str] = None) -> tuple[HostFactsResult, ...]:
    """The facts each host's agent reports at its start (Ansible's ``-m setup``), in inventory
    order; a host that cannot be reached is a result with ``unreachable`` set."""
    from concurrent.futures import ThreadPoolExecutor

    from sandfleet.doctor import HostFactsResult
    from sandfleet.run.scheduler import DEFAULT_FORKS
    from sandfleet.transports.base import AgentInit, HostUnreachable

    if forks is not None and forks < 1:
        raise UsageError(f"forks must be a positive number, got {forks}")
    inv = _inventory(inventory)
    names = inv.select(hosts, limit)
    configs = [inv.host_config(name) for name in names]  # every host's settings checked before any starts
    connect = _connector(host_key_policy, ssh_config, become_password)

    def one(config: HostConfig) -> HostFactsResult:
        try:
            connection = connect(config)
        except HostUnreachable as exc:
            return HostFactsResult(config.name, None, str(exc))
        try:
            found = connection.start(AgentInit(config.workspace_roots, config.sandbox_pin, config.network_resolve,
                                               config.sandbox_reuse, fresh_facts=True))
            return HostFactsResult(config.name, found)
        except HostUnreachable as exc:
            return HostFactsResult(config.name, None, str(exc))
        finally:
            connection.close()

    if not configs:
        return ()
    with ThreadPoolExecutor(max_workers=min(forks or DEFAULT_FORKS, len(configs))) as pool:
        return tuple(pool.map(one, configs))


@dataclass(frozen=True)
class AgentStopResult:
    """What :func:`stop_agents` found on one host: ``residents`` holds ``(state, name)`` per
    resident agent (``stopped``; ``gone``: it had died and what it left was removed; ``refused``
    or ``busy``: it could not be stopped); ``unreachable`` why the host could not be asked;
    ``skipped`` why it was not (a local connection has no resident agent)."""

    host: str
    residents: tuple[tuple[str, str], ...] = ()
    unreachable: Optional[str] = None
    skipped: Optional[str] = None


def stop_agents(inventory: Union[Inventory, PathLike, Sequence[PathLike]], hosts: str = "all", *,
                limit: Optional[str] = None, forks: Optional[int] = None, host_key_policy: HostKeyPolicy = REJECT,
                ssh_config: Optional[str] = None) -> tuple[AgentStopResult, ...]:
    """Stop the resident agents (``sandfleet_agent_persist``, docs/resident-agent.md) of every
    host ``hosts`` selects, all versions, as ``sandfleet agent stop``: each host is reached as for
    a run (the become user's residents with ``ansible_become``) whatever its persist setting, so
    residents a changed inventory forgot are found too. Runs they serve finish; later runs start
    a fresh agent. In inventory order."""
    from concurrent.futures import ThreadPoolExecutor

    from sandfleet.run.scheduler import DEFAULT_FORKS
    from sandfleet.transports.base import HostUnreachable
    from sandfleet.transports.ssh import SshConnector

    if forks is not None and forks < 1:
        raise UsageError(f"forks must be a positive number, got {forks}")
    inv = _inventory(inventory)
    configs = [inv.host_config(name) for name in inv.select(hosts, limit)]
    if not configs:
        return ()
    connector = SshConnector(host_key_policy, ssh_config)

    def one(config: HostConfig) -> AgentStopResult:
        if config.connection == "local":
            return AgentStopResult(config.name, skipped="a local connection keeps no resident agent")
        try:
            return AgentStopResult(config.name, tuple(connector(config).stop_residents()))
        except HostUnreachable as exc:
            return AgentStopResult(config.name, unreachable=str(exc))

    with ThreadPoolExecutor(max_workers=min(forks or DEFAULT_FORKS, len(configs))) as pool:
        return tuple(pool.map(one, configs))


def merge_results(results_dirs: Union[PathLike, Sequence[PathLike]], *, output: Optional[TextIO] = None,
                  format: OutputFormat = "text", junit: Optional[str] = None,
                  results_dir: Optional[str] = None) -> RunResult:
    """Combine the ``results_dir`` of every slice of one sliced run (``run_playbook(slice=...)``,
    ``sandfleet run --slice``) into the result one run over all hosts would have given, as
    ``sandfleet merge`` (docs/slicing.md): each host's results and tally as its slice recorded
    them, the hosts in the unsliced run's order, ``exit_code`` the OR of every slice's bits (130
    when a slice was interrupted), ``aborted`` the first slice's abort. ``output`` gets the recap
    (``format="text"``) or the run's JSON events (``"json"``); ``junit`` and ``results_dir``
    write one JUnit file and one results directory for all hosts.

    The slices are checked first, and nothing is written unless they make one whole run: a slice
    missing or given twice, slices with another N or from another run (their fingerprints differ:
    another playbook, inventory, ``--limit`` or ``--tags``), a host in two slices, a results file
    missing or malformed are each an :class:`~sandfleet.errors.InputError` naming the directory."""
    from sandfleet.report import merge as merging

    paths = [results_dirs] if isinstance(results_dirs, (str, os.PathLike)) else list(results_dirs)
    merged = merging.merge([os.fspath(p) for p in paths])
    merging.check_targets(merged, junit, results_dir)
    if junit is not None:
        write_atomic(junit, merging.junit(merged))
    if results_dir is not None:
        merging.write_results_dir(merged, results_dir)
    if output is not None and format == "json":
        for event in merging.events(merged):
            output.write(dumps(event) + "\n")
    elif output is not None:
        merging.text(merged, output, os.environ)
    hosts = {name: HostResult(name, tuple(_stored_result(event, record) for event, record in doc.results),
                              doc.unreachable) for name, doc in merged.hosts.items()}
    aborted = merged.recap.aborted
    return RunResult(EXIT_INTERRUPTED if merged.interrupted else merged.exit_code, MappingProxyType(hosts),
                     f"{aborted.play}: {aborted.reason}" if aborted else None)


#: What the command line exits with after an interrupt (= cli.EXIT_INTERRUPTED): a merge of an
#: interrupted slice gives it too, as that run did.
EXIT_INTERRUPTED = 130


def _stored_result(event: TaskEvent, record: Mapping[str, Any]) -> TaskResult:
    r = event.result
    return TaskResult(event.host, event.play, event.display_name, event.status, r.rc if r else None,
                      r.stdout if r else "", r.stderr if r else "", r.backend if r else None, r.message if r else None,
                      event.changed, event.ignored, MappingProxyType(dict(record)))


__all__ = ["AgentStopResult", "DoctorResult", "Fleet", "HostFactsResult", "HostReport", "HostResult", "RunResult",
           "Sandbox", "TaskResult", "command_playbook", "doctor", "facts", "load_inventory", "merge_results",
           "open_fleet", "run_command", "run_playbook", "stop_agents"]
