"""One host working through its tasks: variables, ``when``, ``loop``, ``register``, the verdict.

The scheduler decides *when* a host runs a task (lock-step, free, once per batch); this module
decides *how*: render the request from the host's variables with the operator's policy layers
for the host (the host itself checks the task against them), execute it under a watchdog, then
judge it with ``failed_when``/``changed_when`` and register it. Every outcome goes to the
reporter as it happens, so nothing a host finished is lost when it later fails. A failed task
(not ignored) or an unreachable host ends the host's part of the run, as in Ansible.

A task is *in flight* on a host from the moment the scheduler hands it over until its last event
is reported. When the run is interrupted (Ctrl-C, ``Fleet.cancel``), the scheduler calls
:meth:`HostRun.cancel` on every host *before* it closes the connections: a task in flight is then
reported ``cancelled`` (the item that was running, with its request), once, whatever the
connection says afterwards; the agent's answer to the kill (or the dropped connection) is dropped,
not reported, so a killed task never looks finished, failed by itself, or like a lost host. A host
with no task in flight may still have a batch running ahead of the play (a ``linear`` play waits
for the slowest host): the tasks whose results came in are reported as they ended, the one its
agent was running as ``cancelled``, and nothing after it, so a report never hides what ran.

Deliberate differences from Ansible (each narrows, never widens, what runs):

- ``failed_when``/``changed_when`` judge only a command that ran to its exit code. A task whose
  sandbox could not be provided, that timed out or was never started stays failed whatever
  ``failed_when`` says: ``failed_when: false`` must never turn "no sandbox" into success.
- ``ignore_errors`` never covers ``sandbox_unavailable`` nor ``denied`` (see :func:`_ignorable`).
- Extra vars (``-e``) win over everything, registered results included (Ansible's order); a
  ``register`` of a name given with ``-e`` is therefore invisible, and says so in a warning.

Pipelining (:mod:`sandfleet.run.pipeline`): a task that may start a batch is rendered with the
tasks ahead that may travel with it (:meth:`HostRun._pipelined`), their requests go in one line,
and each later ``run_task`` reads its own results; every event, verdict and registered value is
made exactly as above, when the scheduler reaches the task.

In a dry-run nothing runs, so a registered result is unknown: a task whose ``when``, ``loop``,
argv, cwd, env or label reads one (directly, through a variable whose value does, or another
host's through ``hostvars``: docs/variables.md) is neither
rendered nor judged; its event is ``skipped`` with a message starting :data:`DEPENDS` ("depends
on a result"), rather than a guess shown as fact (``when: r.rc == 0`` false, an empty loop) or a
failure (``r.stdout_lines[-1]``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from sandfleet.errors import InputError
from sandfleet.inventory import HostConfig
from sandfleet.load.playbook import Play, Task
from sandfleet.load.policies import effective as effective_policy
from sandfleet.report.events import Reporter, TaskEvent, TaskStatus
from sandfleet.report.text import DEPENDS
from sandfleet.run import pipeline
from sandfleet.run.dry import DryConnection
from sandfleet.run.fleetvars import FleetVars
from sandfleet.run.requests import build_request
from sandfleet.templating import VarRenderer, hostvars_read, names_read
from sandfleet.transports.base import AgentInit, Connection, HostUnreachable
from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.portable.policy import Policy
from sandfleet_agent.portable.wire import (
    MAX_BATCH_REQUESTS,
    BatchEnd,
    BatchStep,
    ExecRequest,
    ExecResult,
    Status,
    encode_request,
)

#: How long past a task's own timeout the controller waits for the agent's answer before it
#: gives the host up: the agent enforces the timeout; this catches an agent that stopped answering.
WATCHDOG_GRACE_S = 30.0

#: The message of a ``cancelled`` event.
CANCELLED_MESSAGE = "the run was interrupted while this task was running; its processes were killed"


@dataclass
class _InFlight:
    """The task a host is running, as far as it got: for its ``cancelled`` event."""

    play: str
    task: Task
    os: Optional[str]
    index: Optional[int] = None  # the loop item being run (None: not looped, or no item yet)
    item: Any = None
    label: Optional[str] = None
    request: Optional[ExecRequest] = None
    started: float = field(default_factory=time.monotonic)
    cancelled: bool = False


@dataclass
class TaskOutcome:
    """What one task did on one host, for the scheduler's batch rules and for ``run_once``."""

    events: list[TaskEvent] = field(default_factory=list)
    unreachable: bool = False

    @property
    def failed(self) -> bool:
        """The host cannot go on: unreachable, or a failure not covered by ``ignore_errors``."""
        return self.unreachable or any(e.failed and not e.ignored for e in self.events)


@dataclass
class _Item:
    """One item rendered before its request is sent: the event it is reported with until a
    result comes (skipped, or the error its rendering raised), and the request (None: none)."""

    event: TaskEvent
    request: Optional[ExecRequest] = None


class _NotRunYet(Exception):
    """An interrupt's report reached a request of the batch whose result had not come in."""

    def __init__(self, request: ExecRequest) -> None:
        super().__init__(request.id)
        self.request = request


@dataclass
class _Prepared:
    """A task's items rendered ahead, for a batch (:meth:`HostRun._pipelined`)."""

    task: Task
    loop: list[Any]  # the loop's items ([None] without a loop)
    items: list[_Item]
    failed: bool = False  # an item (or the loop) did not render: an error event, nothing sent for it
    whole: bool = False  # the loop itself did not render: one error event stands for the task

    def step(self, task: Task) -> Optional[BatchStep]:
        """The task's requests as one step of a batch; the agent may pass over their failures
        only where the controller would (``ignore_errors``, no condition of its own to judge)."""
        requests = tuple(item.request for item in self.items if item.request is not None)
        if not requests:
            return None
        return BatchStep(requests, continue_on_failure=task.ignore_errors and not pipeline.ends_batch(task))


@dataclass
class _BatchPlan:
    """The steps of a batch being formed, within the bounds of one line."""

    steps: list[BatchStep] = field(default_factory=list)
    size: int = 0
    count: int = 0

    def add(self, step: Optional[BatchStep]) -> bool:
        """Take the step (None: a task with nothing to send); False when it would not fit."""
        if step is None:
            return True
        size = sum(len(encode_request(r)) for r in step.requests)
        if self.steps and (self.size + size > pipeline.BATCH_BYTES or self.count + len(step.requests)
                           > MAX_BATCH_REQUESTS):
            return False
        self.steps.append(step)
        self.size, self.count = self.size + size, self.count + len(step.requests)
        return True

    def fits(self) -> bool:
        """Two requests or more, within the bounds (a first task alone may exceed them: then alone)."""
        return 2 <= self.count <= MAX_BATCH_REQUESTS and self.size <= pipeline.BATCH_BYTES


class HostRun:
    """The state of one host across the plays of a run."""

    def __init__(self, config: HostConfig, renderer_for: Callable[[Mapping[str, Any]], VarRenderer],
                 connection: Connection, reporter: Reporter, *, consent: bool, playbook_dir: str,
                 stopping: Optional[threading.Event] = None,
                 extra_vars: Optional[Mapping[str, Any]] = None, policy: Optional[Policy] = None) -> None:
        self.config, self.connection, self.reporter = config, connection, reporter
        #: The operator's policy layers for this host: its inventory policy (or the built-in
        #: default) with ``--allow-unsandboxed``/``sandfleet_allow_unsandboxed`` and its backend pin
        #: folded in, then ``--policy``. Every request carries them; the host checks each task.
        self.policy = effective_policy(config.policy, policy, unsandboxed=consent or config.allow_unsandboxed,
                                       pin=config.sandbox_pin)
        self.stopping = stopping or threading.Event()
        self.renderer_for = renderer_for
        self.extra_vars = dict(extra_vars or {})
        self.runtime: dict[str, Any] = {"playbook_dir": playbook_dir}  # facts and registered results
        self.facts: Optional[HostFacts] = None
        self.done = False  # failed or unreachable: takes no part in later tasks and plays
        self.registered: dict[str, str] = {}  # registered name -> the task that registered it
        #: ``hostvars`` and the play's host lists (run/fleetvars.py), set by the host set; None: none.
        self.fleet: Optional[FleetVars] = None
        self._play: Optional[tuple[int, VarRenderer]] = None
        self._flight_lock = threading.Lock()  # the in-flight task against cancel()
        self._flight: Optional[_InFlight] = None
        self._cancelled = False  # cancel() was called: no new task starts until begin()
        self._ahead: dict[tuple[int, int], _Prepared] = {}  # tasks rendered for the batch in flight
        self._ahead_play: Optional[Play] = None  # the play of those tasks
        #: Ask the agent to probe every backend anew, never from its cache (``sandfleet doctor``).
        self.fresh_facts = False

    @property
    def name(self) -> str:
        return self.config.name

    def begin(self, reporter: Reporter) -> None:
        """A new playbook on this host (an open fleet runs many): report to ``reporter``, take
        part again after an earlier failure, and read play variables afresh."""
        self.reporter, self.done, self._play = reporter, False, None
        self._ahead.clear()
        with self._flight_lock:
            self._flight, self._cancelled = None, False

    def cancel(self) -> Optional[TaskEvent]:
        """The run is interrupted: report the task in flight here (if any) as ``cancelled`` and
        return its event; from now on nothing more of this host is reported. Called before the
        connection is closed, so the killed command's answer cannot be taken for its result.
        With no task in flight, the tasks its agent ran ahead of the play (:meth:`_ran_ahead`)."""
        with self._flight_lock:
            if self._cancelled:
                return None
            self._cancelled = True
            flight = self._flight
            if flight is not None and flight.cancelled:
                return None
            if flight is not None:
                flight.cancelled = True
        if flight is None:
            return self._ran_ahead()
        return self._report_cancelled(flight)

    def _report_cancelled(self, flight: _InFlight) -> TaskEvent:
        task = flight.task
        request_id = flight.request.id if flight.request is not None else None
        ms = int((time.monotonic() - flight.started) * 1000)
        result = ExecResult(id=request_id or f"{self.name}/{task.name}", status=Status.ERROR, duration_ms=ms,
                            message=CANCELLED_MESSAGE)
        looped = task.loop is not None and flight.index is not None
        event = TaskEvent(self.name, flight.play, task.name, TaskStatus.CANCELLED, result, flight.request,
                          os=flight.os, item=flight.item if looped else None, label=flight.label if looped else None,
                          run_once=task.run_once)
        self.reporter.task_event(event)
        return event

    def _ran_ahead(self) -> Optional[TaskEvent]:
        """Interrupted between two tasks (a ``linear`` play waiting for slower hosts) while the
        agent runs the batch ahead: report, as the play would have, each task of the batch whose
        results came in, then the request it was running as ``cancelled`` (returned), and none
        after it; nothing when the batch had ended. Safe from the interrupting thread: with no
        task in flight, no thread of this host renders or reports."""
        play = self._ahead_play
        if not self._ahead or self.done or play is None or self._play is None or self.facts is None:
            return None
        replies = self.connection.received()
        if replies is None:
            return None  # the batch had ended (the rest waits to be sent again): nothing runs ahead
        renderer, facts = self._play[1], self.facts
        results = {r.id: r for r in replies if isinstance(r, ExecResult)}
        ended = any(isinstance(r, BatchEnd) for r in replies)

        def result_of(request: ExecRequest) -> ExecResult:
            if request.id in results:
                return results[request.id]
            raise _NotRunYet(request)

        for _, prepared in sorted(self._ahead.items()):
            sent = [item.request for item in prepared.items if item.request is not None]
            if not sent:
                continue  # skipped on this host: nothing ran
            if ended and sent[0].id not in results:
                break  # the agent stopped before it (a failure it reported)
            self.reporter.task_start(play, prepared.task, [self.name])
            try:
                self._finish_prepared(play, prepared.task, renderer, facts, prepared, result_of)
            except _NotRunYet as exc:
                if ended:
                    break
                n = next(n for n, item in enumerate(prepared.items) if item.request is exc.request)
                looped = prepared.task.loop is not None
                return self._report_cancelled(_InFlight(
                    play.name, prepared.task, facts.os, index=n if looped else None,
                    item=prepared.items[n].event.item, label=prepared.items[n].event.label, request=exc.request))
        return None

    def _report(self, event: TaskEvent) -> None:
        """Report one event of the task in flight, unless the run was interrupted meanwhile."""
        with self._flight_lock:
            if self._flight is not None and self._flight.cancelled:
                return
            self.reporter.task_event(event)

    def _flying(self, **progress: Any) -> None:
        with self._flight_lock:
            if self._flight is not None:
                for name, value in progress.items():
                    setattr(self._flight, name, value)

    # --- the scheduler's entry points -----------------------------------------------------------

    def run_task(self, play_index: int, play: Play, task_index: int, task: Task,
                 ahead: Sequence[tuple[int, Task]] = ()) -> TaskOutcome:
        """Run every item of ``task`` on this host and report each; the host is ``done`` after
        a failure that is not ignored, or when it cannot be reached. ``ahead``: the tasks the
        scheduler runs next that may travel with this one (:mod:`sandfleet.run.pipeline`)."""
        outcome = TaskOutcome()
        with self._flight_lock:
            if self._cancelled:
                return TaskOutcome(unreachable=True)  # interrupted before it started: not news
            self._flight = _InFlight(play.name, task, self.facts.os if self.facts else self.config.os)
        try:
            facts, renderer = self._enter(play_index, play)
            if self.fleet is not None:
                for name, value in self.fleet.for_task(self.name, play_index, task_index).items():
                    renderer.set_fixed(name, value)
            self._flying(os=facts.os)
            if self.stopping.is_set():
                outcome.unreachable = True  # interrupted: not news, not reported
            else:
                prepared = self._pipelined(play, play_index, task, task_index, renderer, facts, ahead)
                if prepared is not None:
                    outcome.events = self._finish_prepared(play, task, renderer, facts, prepared)
                else:
                    outcome.events = self._run_items(play, play_index, task, task_index, renderer, facts)
        except HostUnreachable as exc:
            outcome.unreachable = True
            if not self.stopping.is_set():  # after Ctrl-C every host "drops": that is not news
                self.reporter.host_unreachable(self.name, str(exc))
        # Not in a ``finally``: an exception (Ctrl-C in the thread running it) leaves the task in
        # flight, for cancel() to report.
        with self._flight_lock:
            if self._flight is not None and self._flight.cancelled:
                outcome.unreachable = True  # what it reported was cut short: stop here
            self._flight = None
        if outcome.failed:
            self.done = True
        return outcome

    def adopt(self, play_index: int, play: Play, task: Task, outcome: TaskOutcome) -> TaskOutcome:
        """Take a ``run_once`` task's result as this host's own: its registered variable, and
        its failure (Ansible fails every host of the batch when a run-once task fails)."""
        try:
            _, renderer = self._enter(play_index, play)
        except HostUnreachable as exc:
            self.done = True
            if not self.stopping.is_set():
                self.reporter.host_unreachable(self.name, str(exc))
            return TaskOutcome(unreachable=True)
        if task.register and outcome.events:
            self._register(task, renderer, outcome.events)
        if outcome.failed:
            self.done = True
        return TaskOutcome(events=outcome.events, unreachable=outcome.unreachable)

    # --- one task -------------------------------------------------------------------------------

    def _enter(self, play_index: int, play: Play) -> tuple[HostFacts, VarRenderer]:
        """Start the host's agent once per run and its variables once per play."""
        if self.facts is None:
            facts = self.connection.start(AgentInit(self.config.workspace_roots, self.config.sandbox_pin,
                                                    self.config.network_resolve, self.config.sandbox_reuse,
                                                    fresh_facts=self.fresh_facts))
            if self.config.os and facts.os != self.config.os:
                raise HostUnreachable(f"{self.name} runs {facts.os}, but the inventory says sandfleet_os="
                                      f"{self.config.os}; fix the inventory")
            self.facts = facts
            self.runtime["sandfleet_facts"] = facts.to_dict()
        if self._play is None or self._play[0] != play_index:
            renderer = self.renderer_for({**play.vars, **self.extra_vars})
            renderer.value_limit = self.policy.limits.value_bytes
            for name, value in self.runtime.items():
                if name not in self.extra_vars:
                    renderer.set_fixed(name, value)
            self._play = (play_index, renderer)
        return self.facts, self._play[1]

    def _run_items(self, play: Play, play_index: int, task: Task, task_index: int, renderer: VarRenderer,
                   facts: HostFacts) -> list[TaskEvent]:
        base_id = f"p{play_index + 1}/t{task_index + 1}/{self.name}"
        control = task.loop_control
        items: list[Any] = [None]
        if isinstance(self.connection, DryConnection):
            pending = self._pending(task, renderer)
            if pending:
                if task.register:
                    self.registered[task.register] = task.name
                    if self.fleet is not None:
                        self.fleet.note_registered(task.register, self.name, task.name)
                event = TaskEvent(self.name, play.name, task.name, TaskStatus.SKIPPED,
                                  ExecResult(id=base_id, status=Status.OK, message=pending), os=facts.os,
                                  run_once=task.run_once)
                self._report(event)
                return [event]
        if task.loop is not None:
            try:
                items = self._loop_items(task, renderer)
            except InputError as exc:
                event = self._error_event(play, task, base_id, exc, facts)
                self._report(event)
                return [event]
        events: list[TaskEvent] = []
        for n, item in enumerate(items):
            if self.stopping.is_set():
                break
            request_id = base_id
            if task.loop is not None:
                request_id = f"{base_id}/{n}"
                for name, value in control.item_vars(items, n).items():
                    renderer.set_fixed(name, value)
                if n and control.pause:
                    self.stopping.wait(control.pause)
            if task.loop is not None:
                self._flying(index=n, item=item, label=None, request=None)
            try:
                event = self._run_item(play, task, renderer, request_id, item, facts)
            except InputError as exc:  # e.g. an undefined variable on this host: its task fails, others go on
                event = self._error_event(play, task, request_id, exc, facts, item)
            if task.loop is not None and n < len(items) - 1:
                event = dataclasses.replace(event, final=False)  # more items to come
            events.append(event)
            self._report(event)
        if task.loop is not None:
            for name in control.item_vars(items, 0):
                renderer.drop_fixed(name)
        if task.register and events:
            self._register(task, renderer, events)
        return events

    def _error_event(self, play: Play, task: Task, request_id: str, exc: InputError, facts: HostFacts,
                     item: Any = None) -> TaskEvent:
        result = ExecResult(id=request_id, status=Status.ERROR, message=self._explain(task, exc))
        return TaskEvent(self.name, play.name, task.name, TaskStatus.ERROR, result, os=facts.os,
                         ignored=_ignorable(task, TaskStatus.ERROR), item=item)

    def _run_item(self, play: Play, task: Task, renderer: VarRenderer, request_id: str, item: Any,
                  facts: HostFacts) -> TaskEvent:
        return self._finish_item(task, renderer, self._prepare_item(play, task, renderer, request_id, item, facts))

    def _prepare_item(self, play: Play, task: Task, renderer: VarRenderer, request_id: str, item: Any,
                      facts: HostFacts) -> _Item:
        """Everything of one item that is rendered before its request is sent."""
        label = None
        if task.loop is not None and task.loop_control.label is not None:
            label = str(renderer.render(task.loop_control.label, "loop_control.label", task.mark))
        event = TaskEvent(self.name, play.name, task.name, TaskStatus.SKIPPED, os=facts.os, item=item, label=label,
                          run_once=task.run_once)
        if task.when is not None and not self._condition(task.when, "when", task, renderer):
            return _Item(event)
        return _Item(event, build_request(task, request_id, renderer, facts.os, self.policy))

    def _finish_item(self, task: Task, renderer: VarRenderer, item: _Item,
                     result_of: Optional[Callable[[ExecRequest], ExecResult]] = None) -> TaskEvent:
        """Send the item's request (or read its result from a batch) and judge it."""
        self._flying(label=item.event.label, request=item.request)
        if item.request is None:
            return item.event  # skipped, or its rendering failed: nothing was sent
        result = (result_of or self._execute_watched)(item.request)
        event = dataclasses.replace(item.event, status=TaskStatus.of(result.status), result=result,
                                    request=item.request)
        return self._judge(task, renderer, event)

    # --- pipelining (sandfleet/run/pipeline.py) -------------------------------------------------

    def _pipelined(self, play: Play, play_index: int, task: Task, task_index: int, renderer: VarRenderer,
                   facts: HostFacts, ahead: Sequence[tuple[int, Task]]) -> Optional[_Prepared]:
        """This task's items as its batch rendered them, or, when it may start a batch, rendered
        now with the tasks ahead that may travel with it, whose requests the first
        :meth:`_execute_watched` then sends in one line; None: one request at a time, as ever.
        The watchdog covers each result of a batch as it covers a request alone: its own timeout
        and the grace, counted from when the controller starts waiting for it, which is never
        before the agent started it (the agent runs a batch in order)."""
        prepared = self._ahead.pop((play_index, task_index), None)
        if prepared is not None:
            return prepared
        self._ahead.clear()  # rendered for a batch the host did not get to the end of
        self._ahead_play = play
        if not (self.config.pipelining and self.connection.pipelines and pipeline.pipelined(task)) \
                or (not ahead and task.loop is None) or self._reads(task, set(), renderer):
            return None
        first = self._prepare(play, play_index, task, task_index, renderer, facts)
        batch = _BatchPlan()
        batch.add(first.step(task))
        registered = {task.register} if task.register else set()
        if (first.failed and not task.ignore_errors) or pipeline.ends_batch(task):
            ahead = ()  # the host stops here, or the controller must judge this task first
        for index, later in ahead:
            if self._reads(later, registered | pipeline.BARRIERS, renderer):
                break
            prepared = self._prepare(play, play_index, later, index, renderer, facts)
            if prepared.failed or not batch.add(prepared.step(later)):
                break  # its error is reported when the scheduler gets there, as without a batch
            self._ahead[(play_index, index)] = prepared
            if later.register:
                registered.add(later.register)
        if batch.fits():
            self.connection.pipeline(batch.steps)
        return first

    def _reads(self, task: Task, registered: set[str], renderer: VarRenderer) -> set[str]:
        """Which of ``registered`` and the barriers the fields rendered ahead of the task's request
        read; and its own result, when its conditions set it between its items (:meth:`_judge`)."""
        names = {n for n in registered if n not in self.extra_vars or n in pipeline.BARRIERS}
        own = task.register if task.loop is not None and pipeline.ends_batch(task) else None
        if own and own not in self.extra_vars:
            names.add(own)
        return pipeline.task_reads(task, names, renderer.raw) if names else set()

    def _prepare(self, play: Play, play_index: int, task: Task, task_index: int, renderer: VarRenderer,
                 facts: HostFacts) -> _Prepared:
        """Render a task's items as :meth:`_run_items` does, sending nothing."""
        base_id = f"p{play_index + 1}/t{task_index + 1}/{self.name}"
        if task.loop is None:
            try:
                return _Prepared(task, [None], [self._prepare_item(play, task, renderer, base_id, None, facts)])
            except InputError as exc:
                return _Prepared(task, [None], [_Item(self._error_event(play, task, base_id, exc, facts))],
                                 failed=True)
        try:
            items = self._loop_items(task, renderer)
        except InputError as exc:
            return _Prepared(task, [], [_Item(self._error_event(play, task, base_id, exc, facts))], failed=True,
                             whole=True)
        out = _Prepared(task, items, [])
        control = task.loop_control
        for n, item in enumerate(items):
            for name, value in control.item_vars(items, n).items():
                renderer.set_fixed(name, value)
            try:
                out.items.append(self._prepare_item(play, task, renderer, f"{base_id}/{n}", item, facts))
            except InputError as exc:
                out.items.append(_Item(self._error_event(play, task, f"{base_id}/{n}", exc, facts, item)))
                out.failed = True
        for name in control.item_vars(items, 0):
            renderer.drop_fixed(name)
        return out

    def _finish_prepared(self, play: Play, task: Task, renderer: VarRenderer, facts: HostFacts,
                         prepared: _Prepared,
                         result_of: Optional[Callable[[ExecRequest], ExecResult]] = None) -> list[TaskEvent]:
        """:meth:`_run_items` for a task rendered ahead: the same events, registered the same way.
        ``result_of``: where each result comes from (default: the agent, waiting for it)."""
        if prepared.whole:  # its loop did not render: one error, nothing registered (as _run_items)
            self._report(prepared.items[0].event)
            return [prepared.items[0].event]
        looped, control, events = task.loop is not None, task.loop_control, []
        for n, item in enumerate(prepared.items):
            if self.stopping.is_set():
                break
            if looped:
                for name, value in control.item_vars(prepared.loop, n).items():
                    renderer.set_fixed(name, value)
                self._flying(index=n, item=item.event.item, label=None, request=None)
            try:
                event = self._finish_item(task, renderer, item, result_of)
            except InputError as exc:  # failed_when or changed_when did not render
                assert item.request is not None
                event = self._error_event(play, task, item.request.id, exc, facts, item.event.item)
            if looped and n < len(prepared.items) - 1:
                event = dataclasses.replace(event, final=False)  # more items to come
            events.append(event)
            self._report(event)
        if looped:
            for name in control.item_vars(prepared.loop, 0):
                renderer.drop_fixed(name)
        if task.register and events:
            self._register(task, renderer, events)
        return events

    def _judge(self, task: Task, renderer: VarRenderer, event: TaskEvent) -> TaskEvent:
        """Apply ``changed_when`` and ``failed_when`` to a command that ran to its exit code."""
        result = event.result
        ran = result is not None and result.rc is not None and result.status in (Status.OK, Status.FAILED)
        if not ran or result is None:
            return dataclasses.replace(event, ignored=_ignorable(task, event.status))
        if (task.failed_when or task.changed_when) and task.register:
            renderer.set_fixed(task.register, _as_registered(event))  # visible to the conditions, as in Ansible
        changed = True
        if task.changed_when is not None:
            changed = self._condition(task.changed_when, "changed_when", task, renderer)
        if task.failed_when is not None:
            failed = self._condition(task.failed_when, "failed_when", task, renderer)
            verdict = Status.FAILED if failed else Status.OK
            if verdict is not result.status:
                message = f"failed_when is true ({task.failed_when})" if failed else None
                result = dataclasses.replace(result, status=verdict, message=message)
        failed = result.status is not Status.OK
        status = TaskStatus.of(result.status)
        return dataclasses.replace(event, status=status, result=result, changed=changed and not failed,
                                   ignored=failed and _ignorable(task, status))

    def _condition(self, expression: str, what: str, task: Task, renderer: VarRenderer) -> bool:
        return bool(renderer.render("{{ " + expression + " }}", what, task.marks.get(what, task.mark)))

    def _pending(self, task: Task, renderer: VarRenderer) -> Optional[str]:
        """In a dry-run: why ``task`` cannot be shown, when it reads a result registered by an
        earlier task (through a variable too); ``None`` when it reads none."""
        fleet = self.fleet.registered() if self.fleet is not None else {}
        if not self.registered and not fleet:
            return None
        fields: list[tuple[str, Any]] = [("when", task.when and "{{ " + task.when + " }}"), ("loop", task.loop),
                                         ("argv", list(task.exec.argv)), ("cwd", task.exec.cwd),
                                         ("env", [dict(task.exec.env), *task.exec.env_templates()]),
                                         ("loop_control.label", task.loop_control.label)]
        found: dict[str, list[str]] = {}
        for what, value in fields:
            for name in self._results_read(value, renderer, set(), fleet):
                found.setdefault(name, []).append(what)
        if not found:
            return None
        parts = []
        for name, whats in found.items():
            reads = f"{', '.join(whats)} reads"
            if name == "hostvars":  # a whole host's variables: any result may be among them
                parts.append(f"{reads} hostvars (results registered so far: {', '.join(sorted(fleet))})")
            elif name.startswith("hostvars"):
                parts.append(f"{reads} {name} (registered by {fleet[name.rpartition('.')[2]][1]!r})")
            else:
                parts.append(f"{reads} {name!r} (registered by {self.registered[name]!r})")
        return f"{DEPENDS}: {'; '.join(parts)}; known only when the run gets there, so not rendered"

    def _results_read(self, value: Any, renderer: VarRenderer, seen: set[Any],
                      fleet: Mapping[str, tuple[str, str]], through_hostvars: bool = False) -> set[str]:
        """The registered names a value's templates read, following variables set to templates;
        through ``hostvars`` too (``fleet``: every host's registered names), as ``hostvars[...].NAME``,
        or ``hostvars`` for a use that names no variable (``hostvars[h] | to_json``)."""
        out: set[str] = set()
        if isinstance(value, str):
            for name in names_read(value):
                if name == "hostvars" and fleet:
                    via = hostvars_read(value)
                    if via is None:
                        out.add("hostvars")
                        continue
                    for attr in via:
                        if attr in fleet and attr not in self.extra_vars:
                            out.add(f"hostvars[...].{attr}")
                        elif ("hostvars", attr) not in seen:  # a variable of that host: what does it read?
                            seen.add(("hostvars", attr))
                            out |= self._results_read(renderer.raw(attr), renderer, seen, fleet, True)
                elif through_hostvars and name in fleet and name not in self.extra_vars:
                    out.add(f"hostvars[...].{name}")
                elif not through_hostvars and name in self.registered and name not in self.extra_vars:
                    out.add(name)
                elif (key := ("hostvars", name) if through_hostvars else name) not in seen:
                    seen.add(key)
                    out |= self._results_read(renderer.raw(name), renderer, seen, fleet, through_hostvars)
        elif isinstance(value, Mapping):
            for item in value.values():
                out |= self._results_read(item, renderer, seen, fleet, through_hostvars)
        elif isinstance(value, (list, tuple)):
            for item in value:
                out |= self._results_read(item, renderer, seen, fleet, through_hostvars)
        return out

    def _register(self, task: Task, renderer: VarRenderer, events: list[TaskEvent]) -> None:
        assert task.register
        self.registered[task.register] = task.name
        if self.fleet is not None:
            self.fleet.note_registered(task.register, self.name, task.name)
        value = _registered(events, task.loop is not None)
        self.runtime[task.register] = value
        if task.register not in self.extra_vars:
            renderer.set_fixed(task.register, value)

    def _execute_watched(self, request: ExecRequest) -> ExecResult:
        if request.timeout_s is None:
            return self.connection.execute(request)
        fired = threading.Event()
        timer = threading.Timer(request.timeout_s + WATCHDOG_GRACE_S, _watchdog_expired, (self.connection, fired))
        timer.daemon = True
        timer.start()
        try:
            return self.connection.execute(request)
        except HostUnreachable:
            if fired.is_set():
                raise HostUnreachable(f"{self.name} did not answer within {request.timeout_s:g} s + "
                                      f"{WATCHDOG_GRACE_S:g} s grace; gave the host up") from None
            raise
        finally:
            timer.cancel()

    def _explain(self, task: Task, exc: InputError) -> str:
        return str(InputError(f"task {task.name!r} on host {self.name!r}: {exc.message}", exc.mark,
                              allowed=exc.allowed))

    def _loop_items(self, task: Task, renderer: VarRenderer) -> list[Any]:
        looped = renderer.render(task.loop, "loop", task.marks.get("loop", task.mark))
        if not isinstance(looped, list):
            raise InputError(f"loop of task {task.name!r} on host {self.name!r} must give a list, "
                             f"got {type(looped).__name__}", task.mark)
        return looped


def _ignorable(task: Task, status: TaskStatus) -> bool:
    """``ignore_errors`` covers a failed command, never a sandbox that could not be provided:
    like an unreachable host in Ansible, that is the run's failure, not the task's, and hiding it
    would let a CI pass on a command that never ran (exit bit 8 must survive)."""
    return task.ignore_errors and status not in (TaskStatus.OK, TaskStatus.SKIPPED) and not status.refused


def _watchdog_expired(connection: Connection, fired: threading.Event) -> None:
    fired.set()
    connection.close()


def _as_registered(e: TaskEvent) -> dict[str, Any]:
    """One result as ``register`` stores it: Ansible's command-module keys plus the sandbox's."""
    r = e.result
    if r is None:
        return {"skipped": True, "changed": False, "failed": False, "item": e.item}
    stdout, stderr = r.stdout.rstrip("\r\n"), r.stderr.rstrip("\r\n")  # strip_empty_ends, as Ansible
    return {"rc": r.rc, "stdout": stdout, "stderr": stderr, "stdout_lines": stdout.splitlines(),
            "stderr_lines": stderr.splitlines(), "failed": e.failed, "skipped": False, "changed": e.changed,
            "status": e.status, "backend": r.backend, "msg": r.message or "", "item": e.item,
            "duration_ms": r.duration_ms, "limit": r.limit, "limits": dict(r.limits)}


def _registered(events: list[TaskEvent], looped: bool) -> dict[str, Any]:
    if looped:
        results = [_as_registered(e) for e in events]
        return {"results": results, "failed": any(r["failed"] for r in results),
                "skipped": all(r["skipped"] for r in results), "changed": any(r["changed"] for r in results)}
    return _as_registered(events[0])


__all__ = ["CANCELLED_MESSAGE", "DEPENDS", "WATCHDOG_GRACE_S", "HostRun", "Reporter", "TaskEvent", "TaskOutcome",
           "TaskStatus"]
