"""The run's tally per host, the failing tasks by name, and the exit code computed from them.

Every output format reads the same :class:`Recap`, so the text recap, the JSON ``recap`` event,
the results directory and the exit code can never disagree. Exit code bits: 2 a task failed, 4 a
host unreachable, 8 a sandbox could not be provided, 16 a task asked for more than the policy
allows (``denied``); they combine. A run in which no play matched any host (a typo'd group) exits
1: it ran nothing, which must not look like success (:attr:`Recap.no_hosts`). A failure under
``ignore_errors`` counts as ``ignored`` and sets no bit (``ignore_errors`` never covers
``sandbox_unavailable`` or ``denied``).

Each task counts once per host (Ansible's rule), among ok / failed / sandbox_unavailable / denied /
skipped / ignored / cancelled; ``changed`` is the part of ``ok`` whose task reported a change (as
Ansible's ``ok`` includes ``changed``). ``unreachable`` counts the times a host was given up.

A looped task is one task, however many items it has: its verdict on the host is its worst item's,
in the order denied, sandbox_unavailable, failed (timeout and error too), cancelled, ignored, ok,
skipped. So it is ok when every item is ok or skipped (and changed when one of them changed),
skipped only when every item was skipped, failed when any item failed, ignored when the only
failures were ignored. The per-item results stay in every other output (``--format json`` prints
one ``task_result`` per item, JUnit one testcase per item), and ``failures`` lists each failed item
by name; the exit code takes the bits of every failed item, so an item denied and another failed
give 16 | 2. The items of one task are told apart from the next task by
:attr:`TaskEvent.final` (false on every item but the last).

``cancelled``: the run was interrupted while the task was in flight on the host (Ctrl-C,
``Fleet.cancel``); it is listed with the failures and sets bit 2 (the command line exits 130 after
an interrupt, whatever the recap says).
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
    cancelled: int = 0

    def count(self, verdict: str, changed: bool, by: int = 1) -> None:
        setattr(self, verdict, getattr(self, verdict) + by)
        if verdict == "ok" and changed:
            self.changed += by


#: A looped task's verdict is its worst item's: the first of these any item has.
_WORST_FIRST = ("denied", "sandbox_unavailable", "failed", "cancelled", "ignored", "ok", "skipped")


def verdict(event: TaskEvent) -> str:
    """The recap column one result falls in."""
    if event.status is TaskStatus.OK:
        return "ok"
    if event.status is TaskStatus.SKIPPED:
        return "skipped"
    if event.ignored:
        return "ignored"
    if event.status in (TaskStatus.SANDBOX_UNAVAILABLE, TaskStatus.DENIED, TaskStatus.CANCELLED):
        return str(event.status)
    return "failed"  # failed, timeout, error


def worse(a: str, b: str) -> str:
    return a if _WORST_FIRST.index(a) <= _WORST_FIRST.index(b) else b


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
    #: Per host, the verdict so far (and whether an item changed) of a looped task whose last item
    #: has not come yet: counted already, and recounted as each item arrives.
    _open: dict[str, tuple[str, bool]] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def tally(self, host: str) -> HostTally:
        return self.hosts.setdefault(host, HostTally())

    def targeted(self, hosts: list[str]) -> None:
        """Hosts a play will run on appear in the recap even if no task of theirs reports."""
        with self._lock:
            for host in hosts:
                self.tally(host)

    def add(self, event: TaskEvent) -> None:
        """One result: a task's, or a loop item's (counted into its task's one verdict)."""
        with self._lock:
            t = self.tally(event.host)
            own = verdict(event)
            now, changed = own, own == "ok" and event.changed
            before = self._open.pop(event.host, None)  # the earlier items of this looped task
            if before is not None:
                t.count(before[0], before[1], by=-1)
                now, changed = worse(before[0], now), before[1] or changed
            t.count(now, changed)
            if not event.final:
                self._open[event.host] = (now, changed)
            if own not in ("ok", "skipped", "ignored"):
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
            code |= EXIT_FAILED if t.failed or t.cancelled else 0
            code |= EXIT_UNREACHABLE if t.unreachable else 0
            code |= EXIT_NO_SANDBOX if t.sandbox_unavailable else 0
            code |= EXIT_DENIED if t.denied else 0
        for f in self.failures:  # a looped task counts once, under its worst item; each item's bit counts
            code |= {"sandbox_unavailable": EXIT_NO_SANDBOX, "denied": EXIT_DENIED}.get(f.status, EXIT_FAILED)
        return EXIT_NO_HOSTS if self.no_hosts and not code else code


__all__ = ["EXIT_DENIED", "EXIT_FAILED", "EXIT_NO_HOSTS", "EXIT_NO_SANDBOX", "EXIT_UNREACHABLE", "Abort", "Failure",
           "HostTally", "Recap"]
