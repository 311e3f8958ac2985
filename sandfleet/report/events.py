"""What a run tells its reporters: one :class:`TaskEvent` per task (or loop item) per host.

The host loops and the scheduler produce these; the output formats (text, JSON lines, JUnit,
the results directory) consume them through :class:`Reporter`. Nothing here knows about
transports or rendering, so any output can be added without touching the runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from sandfleet.load.playbook import Play, Task
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status


class TaskStatus(str, Enum):
    """What became of one task on one host: the host's answer (a wire :class:`Status`, same
    values), ``skipped`` when ``when`` was false and nothing was sent, or ``cancelled`` when the
    run was interrupted (Ctrl-C, ``Fleet.cancel``) while the task was in flight on the host: its
    process group was killed, so there is no answer. The last two are the controller's words, never
    on the wire. A ``str`` so outputs and conditions compare and print it as the word it is."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"
    DENIED = "denied"
    ERROR = "error"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, status: Status) -> TaskStatus:
        return cls(status.value)

    @property
    def refused(self) -> bool:
        """The host would not run it: no sandbox it could provide, or more than the policy allows."""
        return self in (TaskStatus.SANDBOX_UNAVAILABLE, TaskStatus.DENIED)


@dataclass(frozen=True)
class TaskEvent:
    """One task (or loop item) on one host: what was asked, and what came of it.

    ``status`` already reflects
    ``failed_when`` (a command that exited 0 but matched ``failed_when`` is ``failed``).
    ``changed`` follows Ansible's command module: true whenever the command ran, unless
    ``changed_when`` says otherwise.
    """

    host: str
    play: str
    task: str
    status: TaskStatus
    result: Optional[ExecResult] = None
    request: Optional[ExecRequest] = None
    os: Optional[str] = None
    ignored: bool = False
    item: Any = None
    label: Optional[str] = None  # loop_control.label rendered for this item, else None
    changed: bool = False
    run_once: bool = False  # ran once for the whole batch; its result stands for every host
    #: The host's last event for this task: the task is over on the host. False only for a loop
    #: item with more items to come; the recap counts a looped task once, at its items' verdict.
    final: bool = True

    @property
    def failed(self) -> bool:
        return self.status not in (TaskStatus.OK, TaskStatus.SKIPPED)

    @property
    def backend_label(self) -> str:
        """What held the command, in a report's words: the backend that ran it (``none`` being
        ``sandbox: false``). A task with no backend never ran in a sandbox, and the label says
        why rather than guess: ``no sandbox`` only when the host had none that could enforce it,
        ``not run`` when it never got that far (a template that failed to render on this host, a
        policy's refusal, a bad request), ``cancelled`` when it was killed before answering."""
        if self.result is not None and self.result.backend:
            return self.result.backend
        if self.status is TaskStatus.SANDBOX_UNAVAILABLE:
            return "no sandbox"
        if self.status is TaskStatus.CANCELLED:
            return "cancelled"
        return "skipped" if self.status is TaskStatus.SKIPPED else "not run"

    @property
    def display_name(self) -> str:
        """The task name as people read it: with the loop item's label when there is one."""
        if self.label is not None:
            return f"{self.task} (item={self.label})"
        if self.item is not None:
            return f"{self.task} (item={self.item})"
        return self.task


class Reporter:
    """What the runner tells about progress; every output format implements the parts it needs."""

    def play_start(self, play: Play, hosts: list[str]) -> None: ...

    def task_start(self, play: Play, task: Task, hosts: list[str]) -> None:
        """A task begins on ``hosts`` (linear: once per batch; free: once per host)."""

    def task_event(self, event: TaskEvent) -> None: ...

    def host_unreachable(self, host: str, message: str) -> None: ...

    def play_aborted(self, play: Play, reason: str) -> None:
        """``any_errors_fatal`` or ``max_fail_percentage`` stopped the play and the run."""

    def finish(self) -> None:
        """The run is over (or interrupted): write summaries and files."""


__all__ = ["Reporter", "TaskEvent", "TaskStatus"]
