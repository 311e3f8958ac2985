"""The run's tally per host, the failing tasks by name, and the exit code computed from them.

Every output format reads the same :class:`Recap`, so the text recap, the JSON ``recap`` event,
the results directory and the exit code can never disagree. Exit code bits: 2 a task failed, 4 a
host unreachable, 8 a sandbox could not be provided, 16 a task asked for more than the policy
allows (``denied``); they combine. A run in which no play matched any host (a typo'd group) exits
1: it ran nothing, which must not look like success (:attr:`Recap.no_hosts`). A failure under
``ignore_errors`` counts as ``ignored`` and sets no bit (``ignore_errors`` never covers
``sandbox_unavailable`` or ``denied``).

Each task result counts once among ok / failed / sandbox_unavailable / denied / skipped / ignored;
``changed`` is the part of ``ok`` whose task reported a change (as Ansible's ``ok`` includes
``changed``). ``unreachable`` counts the times a host was given up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

from sandfleet.report.events import TaskEvent, TaskStatus

EXIT_FAILED, EXIT_UNREACHABLE, EXIT_NO_SANDBOX, EXIT_DENIED = 2, 4, 8, 16
EXIT_NO_HOSTS = 1  # no play matched any host: nothing ran


@dataclass
class HostTally:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    sandbox_unavailable: int = 0
    denied: int = 0
    skipped: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class Failure:
    """One task (or loop item) that failed a host, as the recap lists it."""

    host: str
    play: str
    task: str  # the display name, with the loop item
    status: str

    def __str__(self) -> str:
        return f"{self.host}: {self.task} ({self.status.replace('_', ' ')})"


@dataclass(frozen=True)
class Abort:
    play: str
    reason: str


@dataclass
class Recap:
    """Counts per host (in the order the plays named them), failures, unreachable messages, abort."""

    hosts: dict[str, HostTally] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    unreachable_messages: dict[str, str] = field(default_factory=dict)
    aborted: Optional[Abort] = None
    no_hosts: bool = False  # set by the runner when no play of the run matched any host
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def tally(self, host: str) -> HostTally:
        return self.hosts.setdefault(host, HostTally())

    def targeted(self, hosts: list[str]) -> None:
        """Hosts a play will run on appear in the recap even if no task of theirs reports."""
        with self._lock:
            for host in hosts:
                self.tally(host)

    def add(self, event: TaskEvent) -> None:
        with self._lock:
            t = self.tally(event.host)
            if event.status is TaskStatus.OK:
                t.ok += 1
                t.changed += 1 if event.changed else 0
            elif event.status is TaskStatus.SKIPPED:
                t.skipped += 1
            elif event.ignored:
                t.ignored += 1
            else:
                if event.status is TaskStatus.SANDBOX_UNAVAILABLE:
                    t.sandbox_unavailable += 1
                elif event.status is TaskStatus.DENIED:
                    t.denied += 1
                else:
                    t.failed += 1
                self.failures.append(Failure(event.host, event.play, event.display_name, event.status))

    def unreachable(self, host: str, message: str) -> None:
        with self._lock:
            self.tally(host).unreachable += 1
            self.unreachable_messages.setdefault(host, message)

    def abort(self, play: str, reason: str) -> None:
        """The first abort stands: it stopped the run, so a later one is its echo."""
        with self._lock:
            if self.aborted is None:
                self.aborted = Abort(play, reason)

    def exit_code(self) -> int:
        code = 0
        for t in self.hosts.values():
            code |= EXIT_FAILED if t.failed else 0
            code |= EXIT_UNREACHABLE if t.unreachable else 0
            code |= EXIT_NO_SANDBOX if t.sandbox_unavailable else 0
            code |= EXIT_DENIED if t.denied else 0
        return EXIT_NO_HOSTS if self.no_hosts and not code else code


__all__ = ["EXIT_DENIED", "EXIT_FAILED", "EXIT_NO_HOSTS", "EXIT_NO_SANDBOX", "EXIT_UNREACHABLE", "Abort", "Failure",
           "HostTally", "Recap"]
