"""One host working through a play: variables, ``when``, ``loop``, ``register``, consent, results.

Tasks on a host run in order; a failed task (not ignored) ends the host's part of the play and
of the playbook, as in Ansible; an unreachable host is done for the whole run. Every outcome is
handed to the reporter as it happens, so nothing a host finished is lost when it later fails.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sandfleet.errors import InputError
from sandfleet.inventory import HostConfig
from sandfleet.inventory.template import VarRenderer
from sandfleet.modules.backends.base import Wrapper
from sandfleet.modules.facts import HostFacts
from sandfleet.modules.wire import ExecRequest, ExecResult, Status
from sandfleet.playbook import Play, Task
from sandfleet.runner.base import AgentInit, Connection, HostUnreachable
from sandfleet.runner.requests import build_request

SKIPPED = "skipped"
#: How long past a task's own timeout the controller waits for the agent's answer before it
#: gives the host up: the agent enforces the timeout; this catches an agent that stopped answering.
WATCHDOG_GRACE_S = 30.0
UNSANDBOXED_REFUSAL = ("this task is marked 'sandbox: false' and would run without any sandbox; the "
                       "operator must consent with --allow-unsandboxed (or sandfleet_allow_unsandboxed: "
                       "true for this host in the inventory)")


@dataclass(frozen=True)
class TaskEvent:
    """One task (or loop item) on one host: what was asked, and what came of it."""

    host: str
    play: str
    task: str
    status: str  # a wire Status value, or "skipped"
    result: Optional[ExecResult] = None
    request: Optional[ExecRequest] = None
    wrapper: Optional[Wrapper] = None  # dry-run only: the exact wrapper that would run
    os: Optional[str] = None
    ignored: bool = False
    item: Any = None

    @property
    def failed(self) -> bool:
        return self.status not in (Status.OK.value, SKIPPED)


class Reporter:
    """What the host loops tell about progress; the output formats implement it."""

    def play_start(self, play: Play, hosts: list[str]) -> None: ...

    def task_event(self, event: TaskEvent) -> None: ...

    def host_unreachable(self, host: str, message: str) -> None: ...


Executor = Callable[[Connection, ExecRequest], "tuple[ExecResult, Optional[Wrapper]]"]


def run_on_connection(connection: Connection, request: ExecRequest) -> tuple[ExecResult, Optional[Wrapper]]:
    return connection.execute(request), None


class HostRun:
    """The state of one host across the plays of a run."""

    def __init__(self, config: HostConfig, renderer_for: Callable[[Mapping[str, Any]], VarRenderer],
                 connection: Connection,
                 reporter: Reporter, *, consent: bool, playbook_dir: str,
                 executor: Executor = run_on_connection, stopping: Optional[threading.Event] = None) -> None:
        self.config, self.connection, self.reporter = config, connection, reporter
        self.consent, self.executor = consent, executor
        self.stopping = stopping or threading.Event()
        self.renderer_for = renderer_for
        self.runtime: dict[str, Any] = {"playbook_dir": playbook_dir}  # facts and registered results
        self.facts: Optional[HostFacts] = None
        self.done = False  # failed or unreachable: takes no part in later plays

    @property
    def name(self) -> str:
        return self.config.name

    def _start(self) -> HostFacts:
        if self.facts is None:
            facts = self.connection.start(AgentInit(self.config.workspace_roots, self.config.sandbox_pin))
            if self.config.os and facts.os != self.config.os:
                raise HostUnreachable(f"{self.name} runs {facts.os}, but the inventory says sandfleet_os="
                                      f"{self.config.os}; fix the inventory")
            self.facts = facts
            self.runtime["sandfleet_facts"] = facts.to_dict()
        return self.facts

    def run_play(self, play_index: int, play: Play) -> None:
        try:
            facts = self._start()
            renderer = self.renderer_for(play.vars)
            for name, value in self.runtime.items():
                renderer.set_fixed(name, value)
            for task_index, task in enumerate(play.tasks):
                if self.stopping.is_set():
                    self.done = True
                    return
                if not self._run_task(play, play_index, task, task_index, renderer, facts):
                    self.done = True
                    return
        except HostUnreachable as exc:
            self.done = True
            if not self.stopping.is_set():  # after Ctrl-C every host "drops": that is not news
                self.reporter.host_unreachable(self.name, str(exc))

    def _run_task(self, play: Play, play_index: int, task: Task, task_index: int, renderer: VarRenderer,
                  facts: HostFacts) -> bool:
        """Run every item of one task; False when the host must stop."""
        items: list[Any] = [None]
        if task.loop is not None:
            try:
                items = self._loop_items(task, renderer)
            except InputError as exc:
                event = TaskEvent(self.name, play.name, task.name, Status.ERROR.value,
                                  ExecResult(id=f"p{play_index + 1}/t{task_index + 1}/{self.name}",
                                             status=Status.ERROR, message=self._explain(task, exc)),
                                  os=facts.os, ignored=task.ignore_errors)
                self.reporter.task_event(event)
                return task.ignore_errors
        outcomes: list[TaskEvent] = []
        for n, item in enumerate(items):
            if task.loop is not None:
                renderer.set_fixed("item", item)
            base_id = f"p{play_index + 1}/t{task_index + 1}/{self.name}"
            request_id = base_id if task.loop is None else f"{base_id}/{n}"
            try:
                event = self._run_item(play, task, renderer, request_id, item, facts)
            except InputError as exc:  # e.g. an undefined variable on this host: its task fails, others go on
                result = ExecResult(id=request_id, status=Status.ERROR, message=self._explain(task, exc))
                event = TaskEvent(self.name, play.name, task.name, Status.ERROR.value, result, os=facts.os,
                                  ignored=task.ignore_errors, item=item)
            outcomes.append(event)
            self.reporter.task_event(event)
        if task.loop is not None:
            renderer.drop_fixed("item")
        if task.register:
            self.runtime[task.register] = _registered(outcomes, task.loop is not None)
            renderer.set_fixed(task.register, self.runtime[task.register])
        return not any(e.failed and not e.ignored for e in outcomes)

    def _execute_watched(self, request: ExecRequest) -> tuple[ExecResult, Optional[Wrapper]]:
        if request.timeout_s is None:
            return self.executor(self.connection, request)
        fired = threading.Event()
        timer = threading.Timer(request.timeout_s + WATCHDOG_GRACE_S, _watchdog_expired, (self.connection, fired))
        timer.daemon = True
        timer.start()
        try:
            return self.executor(self.connection, request)
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
        looped = renderer.render(task.loop, "loop", task.mark)
        if not isinstance(looped, list):
            raise InputError(f"loop of task {task.name!r} on host {self.name!r} must give a list, "
                             f"got {type(looped).__name__}", task.mark)
        return looped

    def _run_item(self, play: Play, task: Task, renderer: VarRenderer, request_id: str, item: Any,
                  facts: HostFacts) -> TaskEvent:
        common = {"host": self.name, "play": play.name, "task": task.name, "os": facts.os, "item": item}
        if task.when is not None and not renderer.render("{{ " + task.when + " }}", "when", task.mark):
            return TaskEvent(status=SKIPPED, **common)
        request = build_request(task, request_id, renderer, facts.os)
        if request.sandbox is None and not (self.consent or self.config.allow_unsandboxed):
            result = ExecResult(id=request_id, status=Status.SANDBOX_UNAVAILABLE, message=UNSANDBOXED_REFUSAL)
            wrapper = None
        else:
            result, wrapper = self._execute_watched(request)
        ignored = task.ignore_errors and result.status is not Status.OK
        return TaskEvent(status=result.status.value, result=result, request=request, wrapper=wrapper,
                         ignored=ignored, **common)


def _watchdog_expired(connection: Connection, fired: threading.Event) -> None:
    fired.set()
    connection.close()


def _registered(events: list[TaskEvent], looped: bool) -> dict[str, Any]:
    def one(e: TaskEvent) -> dict[str, Any]:
        r = e.result
        if r is None:
            return {"skipped": True, "changed": False, "failed": False, "item": e.item}
        return {"rc": r.rc, "stdout": r.stdout, "stderr": r.stderr, "stdout_lines": r.stdout.splitlines(),
                "stderr_lines": r.stderr.splitlines(), "failed": e.failed, "skipped": False, "changed": True,
                "status": e.status, "backend": r.backend, "msg": r.message or "", "item": e.item}
    if looped:
        results = [one(e) for e in events]
        return {"results": results, "failed": any(r["failed"] for r in results),
                "skipped": all(r["skipped"] for r in results), "changed": any(r["changed"] for r in results)}
    return one(events[0])
