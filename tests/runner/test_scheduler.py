"""The scheduler's rules (sandfleet/run/scheduler.py), one test each, above the transport.

Every host is a :class:`FakeConnection` (docs/architecture.md §8 allows a fake here): it answers
each task from its argv and logs when each call started and ended on one sequence shared by all
hosts, so the tests assert the *order* the rules promise (lock-step, a free host running ahead,
batch after batch, play after play), not only the final statuses. A few of the same rules also
run end to end on real sandboxes in tests/test_play_semantics.py.

The fake's argv: the first element is the task's label (the log's name for the call); the others
are data, except these actions, each applying to every host or, written ``HOST:ACTION``, to one:

- ``fail``: the command fails (rc 1);
- ``unreachable``: the host is lost (:class:`HostUnreachable`);
- ``hang``: no answer until the connection is closed, then the host is lost;
- ``sleep=S``: take S seconds, then succeed;
- ``wait=HOST/LABEL``: succeed once HOST has started LABEL; fail after :data:`WAIT_S` if it never does.

Any other call succeeds with the host's name as its stdout (so ``register`` shows who ran it).
"""

from __future__ import annotations

import itertools
import textwrap
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from sandfleet.inventory import HostConfig, load_inventory
from sandfleet.load.playbook import Play, Task, load_playbook
from sandfleet.report.events import Reporter, TaskEvent
from sandfleet.run import hostloop
from sandfleet.run.hostloop import HostRun
from sandfleet.run.scheduler import run_playbook
from sandfleet.transports.base import AgentInit, Connection, HostUnreachable
from sandfleet_agent.binding.facts import HostFacts, assumed_facts
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status

#: How long a ``wait=`` action waits for the call it names before it fails its task.
WAIT_S = 3.0


@dataclass(frozen=True)
class Call:
    """One task on one host as the connection saw it; ``start``/``end`` share one sequence."""

    host: str
    label: str
    argv: tuple[str, ...]
    play: int  # 1-based, from the request id (p1/t2/host)
    start: int
    end: int

    def __str__(self) -> str:
        return f"{self.start:>3}-{self.end:<3} p{self.play} {self.host} {self.label}"


class Events(Reporter):
    """What the scheduler told its reporter, in the order it told it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[TaskEvent] = []
        self.unreachable: dict[str, str] = {}
        self.plays: list[tuple[str, list[str]]] = []  # (play name, hosts) per play_start
        self.task_starts: list[tuple[str, list[str]]] = []  # (task name, hosts) per task_start
        self.aborted: list[str] = []

    def play_start(self, play: Play, hosts: list[str]) -> None:
        with self.lock:
            self.plays.append((play.name, list(hosts)))

    def task_start(self, play: Play, task: Task, hosts: list[str]) -> None:
        with self.lock:
            self.task_starts.append((task.name, list(hosts)))

    def task_event(self, event: TaskEvent) -> None:
        with self.lock:
            self.events.append(event)

    def host_unreachable(self, host: str, message: str) -> None:
        with self.lock:
            self.unreachable[host] = message

    def play_aborted(self, play: Play, reason: str) -> None:
        with self.lock:
            self.aborted.append(reason)

    def statuses(self, task: str) -> dict[str, str]:
        return {e.host: str(e.status) for e in self.events if e.task == task}


class Fleet:
    """``hosts`` fake hosts h1..hN (those in ``down`` refuse the connection), one run on them."""

    def __init__(self, tmp: Path, hosts: int = 3, down: Iterable[str] = ()) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.names = [f"h{i}" for i in range(1, hosts + 1)]
        self.down = set(down)
        self.report = Events()
        self.calls: list[Call] = []
        self.contacted: list[str] = []  # hosts whose agent was started, in order
        self.most_at_once = 0
        self.cond = threading.Condition()
        self._seq = itertools.count()
        self._started: set[tuple[str, str]] = set()
        self._running = 0

    def run(self, playbook: str, *, forks: Optional[int] = None) -> dict[str, HostRun]:
        inventory = self.tmp / "inv.ini"
        inventory.write_text("[all]\n" + "".join(f"{h} sandfleet_os=linux\n" for h in self.names))
        path = self.tmp / "pb.yml"
        path.write_text(textwrap.dedent(playbook))
        return run_playbook(load_playbook(str(path)), load_inventory([str(inventory)]), self.report, self.connect,
                            forks=forks)

    def connect(self, config: HostConfig) -> FakeConnection:
        return FakeConnection(self, config.name)

    # --- reading the log ------------------------------------------------------------------------

    def of(self, label: Optional[str] = None, host: Optional[str] = None, play: Optional[int] = None) -> list[Call]:
        """The calls that match, in the order they started."""
        return sorted((c for c in self.calls if label in (None, c.label) and host in (None, c.host)
                       and play in (None, c.play)), key=lambda c: c.start)

    def ran(self, label: str) -> list[str]:
        """The hosts that ran ``label``, in the order they started it."""
        return [c.host for c in self.of(label)]

    def timeline(self) -> str:
        return "\n".join(map(str, sorted(self.calls, key=lambda c: c.start)))

    # --- the connection's side ------------------------------------------------------------------

    def begin(self, host: str, label: str) -> int:
        with self.cond:
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
            self._started.add((host, label))
            self.cond.notify_all()
            return next(self._seq)

    def end(self, host: str, request: ExecRequest, start: int) -> None:
        with self.cond:
            self._running -= 1
            self.calls.append(Call(host, request.argv[0], tuple(request.argv), int(request.id.split("/")[0][1:]),
                                   start, next(self._seq)))

    def wait_started(self, host: str, label: str) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: (host, label) in self._started, WAIT_S)


def before(earlier: list[Call], later: list[Call]) -> bool:
    """Every call of ``earlier`` ended before any call of ``later`` started (both non-empty)."""
    assert earlier and later
    return max(c.end for c in earlier) < min(c.start for c in later)


class FakeConnection(Connection):
    def __init__(self, fleet: Fleet, host: str) -> None:
        self.fleet, self.host = fleet, host
        self.closed = threading.Event()

    def start(self, init: AgentInit) -> HostFacts:
        with self.fleet.cond:
            self.fleet.contacted.append(self.host)
        if self.host in self.fleet.down:
            raise HostUnreachable(f"{self.host}: connection refused")
        return assumed_facts("linux")

    def execute(self, request: ExecRequest) -> ExecResult:
        start = self.fleet.begin(self.host, request.argv[0])
        try:
            return self._answer(request)
        finally:
            self.fleet.end(self.host, request, start)

    def _answer(self, request: ExecRequest) -> ExecResult:
        for word in request.argv[1:]:
            host, _, action = word.rpartition(":")
            if host not in ("", self.host):
                continue
            if action == "fail":
                return ExecResult(id=request.id, status=Status.FAILED, rc=1, stderr="told to fail\n", backend="bwrap")
            if action in ("unreachable", "hang"):
                if action == "hang":
                    self.closed.wait(30)
                raise HostUnreachable(f"lost {self.host}")
            if action.startswith("sleep="):
                time.sleep(float(action[len("sleep="):]))
            if action.startswith("wait="):
                other, _, label = action[len("wait="):].partition("/")
                if not self.fleet.wait_started(other, label):
                    return ExecResult(id=request.id, status=Status.FAILED, rc=1, backend="bwrap",
                                      message=f"waited {WAIT_S:g} s in vain for {other} to start {label}")
        return ExecResult(id=request.id, status=Status.OK, rc=0, stdout=f"{self.host}\n", backend="bwrap")

    def close(self) -> None:
        self.closed.set()


# --- strategies -----------------------------------------------------------------------------------


def test_linear_every_host_finishes_a_task_before_any_host_starts_the_next(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, hosts=3)
    fleet.run("""
        - hosts: all
          tasks:
            - {name: a, exec: {argv: [a, "h1:sleep=0.2"]}}
            - {name: b, exec: {argv: [b, "h3:sleep=0.1"]}}
            - {name: c, exec: {argv: [c]}}
        """)
    assert [sorted(fleet.ran(t)) for t in "abc"] == [fleet.names] * 3
    assert before(fleet.of("a"), fleet.of("b")) and before(fleet.of("b"), fleet.of("c")), fleet.timeline()
    assert [hosts for _, hosts in fleet.report.task_starts] == [fleet.names] * 3  # one start per task


def test_free_lets_a_fast_host_run_ahead_of_a_slow_one(tmp_path: Path) -> None:
    """h1's first task ends only once h2 has started the last one: linear would deadlock (and fail)."""
    fleet = Fleet(tmp_path, hosts=2)
    fleet.run("""
        - hosts: all
          strategy: free
          tasks:
            - {name: a, exec: {argv: [a, "h1:wait=h2/c"]}}
            - {name: b, exec: {argv: [b]}}
            - {name: c, exec: {argv: [c]}}
        """)
    assert {e.status for e in fleet.report.events} == {"ok"}, [e.result for e in fleet.report.events]
    (h1_a,) = fleet.of("a", "h1")
    assert [c.label for c in fleet.of(host="h2") if c.start < h1_a.end] == ["a", "b", "c"], fleet.timeline()
    assert [c.label for c in fleet.of(host="h1")] == ["a", "b", "c"]  # the slow host still runs everything


# --- serial ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("serial", "hosts", "expected"), [
    ("2", 5, [["h1", "h2"], ["h3", "h4"], ["h5"]]),
    ("'60%'", 5, [["h1", "h2", "h3"], ["h4", "h5"]]),  # 3 of 5
    ("'10%'", 4, [["h1"], ["h2"], ["h3"], ["h4"]]),  # rounds down, but at least one host
    ("[1, '34%']", 6, [["h1"], ["h2", "h3"], ["h4", "h5"], ["h6"]]),  # the last size repeats
    ("[2, 1]", 4, [["h1", "h2"], ["h3"], ["h4"]]),
])
def test_serial_batches_run_one_after_another(tmp_path: Path, serial: str, hosts: int,
                                              expected: list[list[str]]) -> None:
    """Each batch runs every task before the next batch starts its first."""
    fleet = Fleet(tmp_path, hosts=hosts)
    fleet.run(f"""
        - hosts: all
          serial: {serial}
          tasks:
            - {{name: a, exec: {{argv: [a]}}}}
            - {{name: b, exec: {{argv: [b]}}}}
        """)
    assert [hosts for task, hosts in fleet.report.task_starts if task == "a"] == expected
    for batch, following in zip(expected, expected[1:]):
        earlier = [c for h in batch for c in fleet.of(host=h)]
        later = [c for h in following for c in fleet.of(host=h)]
        assert len(earlier) == 2 * len(batch) and before(earlier, later), fleet.timeline()


# --- failure rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "aborts"), [(30, True), (50, False)])
def test_max_fail_percentage_counts_unreachable_hosts_and_is_checked_after_each_task(
        tmp_path: Path, limit: int, aborts: bool) -> None:
    """h1 fails, h2 is lost: 2 of 4 = 50 %, more than 30 % (abort), not more than 50 % (go on)."""
    fleet = Fleet(tmp_path, hosts=4)
    runs = fleet.run(f"""
        - hosts: all
          max_fail_percentage: {limit}
          tasks:
            - {{name: a, exec: {{argv: [a, "h1:fail", "h2:unreachable", "h4:sleep=0.1"]}}}}
            - {{name: b, exec: {{argv: [b]}}}}
        """)
    assert sorted(fleet.ran("a")) == fleet.names  # the task finished on every host first
    assert set(fleet.report.unreachable) == {"h2"} and runs["h1"].done and runs["h2"].done
    if aborts:
        assert fleet.ran("b") == []
        assert fleet.report.aborted == ["max_fail_percentage 30% exceeded: 2 of 4 host(s) of the batch failed (50%)"]
    else:
        assert sorted(fleet.ran("b")) == ["h3", "h4"] and fleet.report.aborted == []


def test_max_fail_percentage_is_a_share_of_the_batch_not_of_the_play(tmp_path: Path) -> None:
    playbook = """
        - hosts: all
          {serial}
          max_fail_percentage: 40
          tasks:
            - {{name: a, exec: {{argv: [a, "h1:fail"]}}}}
            - {{name: b, exec: {{argv: [b]}}}}
        """
    batches = Fleet(tmp_path / "batches", hosts=4)
    batches.run(playbook.format(serial="serial: 2"))  # h1 is 1 of 2 = 50 % of its batch
    assert batches.ran("b") == [] and batches.contacted == ["h1", "h2"]  # the next batch never started
    assert batches.report.aborted == ["max_fail_percentage 40% exceeded: 1 of 2 host(s) of the batch failed (50%)"]
    whole = Fleet(tmp_path / "whole", hosts=4)
    whole.run(playbook.format(serial=""))  # 1 of 4 = 25 %
    assert sorted(whole.ran("b")) == ["h2", "h3", "h4"] and whole.report.aborted == []


def test_a_batch_in_which_every_host_failed_stops_the_run_unless_max_fail_percentage_is_set(
        tmp_path: Path) -> None:
    playbook = """
        - hosts: all
          serial: 1
          {limit}
          tasks:
            - {{name: a, exec: {{argv: [a, "h1:fail"]}}}}
            - {{name: b, exec: {{argv: [b]}}}}
        - hosts: all
          tasks:
            - {{name: c, exec: {{argv: [c]}}}}
        """
    stops = Fleet(tmp_path / "stops", hosts=3)
    stops.run(playbook.format(limit=""))
    assert stops.ran("a") == ["h1"] and stops.contacted == ["h1"] and stops.calls[-1].label == "a"
    assert stops.report.aborted == ["every host of the batch failed (h1); the run stops"]
    goes_on = Fleet(tmp_path / "goes_on", hosts=3)
    goes_on.run(playbook.format(limit="max_fail_percentage: 100"))  # 100 %: never aborts, even then
    assert goes_on.ran("a") == ["h1", "h2", "h3"] and goes_on.ran("b") == ["h2", "h3"]
    assert sorted(goes_on.ran("c")) == ["h2", "h3"] and goes_on.report.aborted == []


@pytest.mark.parametrize("strategy", ["linear", "free"])
def test_any_errors_fatal_lets_the_running_task_finish_then_stops_everything(tmp_path: Path, strategy: str) -> None:
    """h2 fails ``a`` once h1 and h3 have started it (under ``free`` a host that had not started
    yet would not start at all) and while they still run it: they finish it, nobody starts another
    task, and no later play runs."""
    fleet = Fleet(tmp_path, hosts=3)
    runs = fleet.run(f"""
        - hosts: all
          strategy: {strategy}
          any_errors_fatal: true
          tasks:
            - name: a
              exec: {{argv: [a, "h2:wait=h1/a", "h2:wait=h3/a", "h2:fail", "h1:sleep=0.2", "h3:sleep=0.2"]}}
            - {{name: b, exec: {{argv: [b]}}}}
        - hosts: all
          tasks:
            - {{name: c, exec: {{argv: [c]}}}}
        """)
    assert fleet.report.statuses("a") == {"h1": "ok", "h2": "failed", "h3": "ok"}, fleet.timeline()
    assert [c.label for c in fleet.calls] == ["a"] * 3 and len(fleet.report.plays) == 1
    assert fleet.report.aborted == ["any_errors_fatal: h2 failed 'a'"]
    assert runs["h2"].done and not runs["h1"].done  # h1 did not fail: the run stopped around it


def test_ignore_errors_keeps_the_host_going_and_out_of_the_failure_rules(tmp_path: Path) -> None:
    """An ignored failure neither ends its host nor trips ``any_errors_fatal``; the same failure
    without ``ignore_errors`` does both."""
    fleet = Fleet(tmp_path, hosts=2)
    runs = fleet.run("""
        - hosts: all
          any_errors_fatal: true
          tasks:
            - {name: a, exec: {argv: [a, "h1:fail"]}, ignore_errors: true}
            - {name: b, exec: {argv: [b]}}
            - {name: c, exec: {argv: [c, "h1:fail"]}}
            - {name: d, exec: {argv: [d]}}
        """)
    (ignored,) = [e for e in fleet.report.events if e.task == "a" and e.host == "h1"]
    assert ignored.status == "failed" and ignored.ignored and ignored.failed
    assert sorted(fleet.ran("b")) == ["h1", "h2"] and sorted(fleet.ran("c")) == ["h1", "h2"]
    assert fleet.ran("d") == [] and fleet.report.aborted == ["any_errors_fatal: h1 failed 'c'"]
    assert runs["h1"].done and not runs["h2"].done


def test_an_unreachable_host_drops_out_without_stopping_the_others(tmp_path: Path) -> None:
    """h2 cannot be reached at all, h3 is lost at its second task: both sit out the rest of the
    run (this play and the next); h1 and h4 run everything."""
    fleet = Fleet(tmp_path, hosts=4, down=["h2"])
    runs = fleet.run("""
        - hosts: all
          tasks:
            - {name: a, exec: {argv: [a]}}
            - {name: b, exec: {argv: [b, "h3:unreachable"]}}
            - {name: c, exec: {argv: [c]}}
        - hosts: all
          tasks:
            - {name: d, exec: {argv: [d]}}
        """, forks=2)
    assert set(fleet.report.unreachable) == {"h2", "h3"} and "h2: connection refused" in fleet.report.unreachable["h2"]
    assert fleet.of(host="h2") == [] and [c.label for c in fleet.of(host="h3")] == ["a", "b"]
    for host in ("h1", "h4"):
        assert [c.label for c in fleet.of(host=host)] == ["a", "b", "c", "d"]
    assert fleet.report.plays[1][1] == ["h1", "h4"] and fleet.report.aborted == []
    assert runs["h2"].done and runs["h3"].done and not runs["h1"].done
    assert fleet.report.statuses("b") == {"h1": "ok", "h4": "ok"}  # a lost host has no result, only the notice


def test_a_failed_host_sits_out_later_plays_which_start_when_the_last_host_is_done(tmp_path: Path) -> None:
    """Plays follow one another for the whole fleet: play 2 waits for play 1's slowest host (here
    under ``free``, where the fast ones finish early), and starts without the hosts that failed."""
    fleet = Fleet(tmp_path, hosts=3)
    fleet.run("""
        - hosts: all
          strategy: free
          tasks:
            - {name: a, exec: {argv: [a, "h2:fail", "h1:sleep=0.2"]}}
            - {name: b, exec: {argv: [b]}}
        - hosts: all
          tasks:
            - {name: c, exec: {argv: [c]}}
        - hosts: h2:h3
          tasks:
            - {name: d, exec: {argv: [d]}}
        """)
    assert [c.label for c in fleet.of(host="h2")] == ["a"]
    assert [hosts for _, hosts in fleet.report.plays] == [["h1", "h2", "h3"], ["h1", "h3"], ["h3"]]
    assert before(fleet.of(play=1), fleet.of(play=2)) and before(fleet.of(play=2), fleet.of(play=3)), fleet.timeline()
    assert sorted(fleet.ran("c")) == ["h1", "h3"] and fleet.ran("d") == ["h3"] and fleet.report.aborted == []


# --- run_once -------------------------------------------------------------------------------------


def test_run_once_runs_on_the_first_host_of_each_batch_and_every_host_registers_it(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, hosts=4)
    fleet.run("""
        - hosts: all
          serial: 2
          tasks:
            - {name: once, exec: {argv: [once]}, run_once: true, register: o}
            - {name: b, exec: {argv: [b, "{{ o.stdout }}"]}}
        """)
    assert fleet.ran("once") == ["h1", "h3"]
    assert {c.host: c.argv[1] for c in fleet.of("b")} == {"h1": "h1", "h2": "h1", "h3": "h3", "h4": "h3"}
    assert [(t, hosts) for t, hosts in fleet.report.task_starts if t == "once"] == [("once", ["h1"]), ("once", ["h3"])]


def test_run_once_under_free_runs_on_the_first_host_to_reach_it(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, hosts=2)
    fleet.run("""
        - hosts: all
          strategy: free
          tasks:
            - {name: a, exec: {argv: [a, "h1:sleep=0.3"]}}
            - {name: once, exec: {argv: [once]}, run_once: true, register: o}
            - {name: b, exec: {argv: [b, "{{ o.stdout }}"]}}
        """)
    assert fleet.ran("once") == ["h2"]
    assert {c.host: c.argv[1] for c in fleet.of("b")} == {"h1": "h2", "h2": "h2"}


def test_a_failed_run_once_task_fails_every_host_of_the_batch(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, hosts=3)
    runs = fleet.run("""
        - hosts: all
          tasks:
            - {name: once, exec: {argv: [once, fail]}, run_once: true}
            - {name: b, exec: {argv: [b]}}
        """)
    assert fleet.ran("once") == ["h1"] and fleet.ran("b") == []
    assert all(runs[h].done for h in fleet.names)
    assert fleet.report.aborted == ["every host of the batch failed (h1, h2, h3); the run stops"]


# --- forks and the watchdog -----------------------------------------------------------------------


@pytest.mark.parametrize(("forks", "at_once"), [(2, 2), (5, 5)])
def test_forks_is_how_many_hosts_run_at_once(tmp_path: Path, forks: int, at_once: int) -> None:
    fleet = Fleet(tmp_path, hosts=5)
    fleet.run("- hosts: all\n  tasks:\n    - {name: a, exec: {argv: [a, 'sleep=0.1']}}\n", forks=forks)
    assert sorted(fleet.ran("a")) == fleet.names and fleet.most_at_once == at_once, fleet.timeline()


def test_a_host_that_stops_answering_is_given_up_by_the_watchdog(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostloop, "WATCHDOG_GRACE_S", 0.2)
    fleet = Fleet(tmp_path, hosts=4)
    fleet.run("- hosts: all\n  tasks:\n    - exec: {argv: [a, 'h2:hang'], timeout: 0.1}\n", forks=4)
    assert "did not answer within 0.1 s + 0.2 s grace" in fleet.report.unreachable["h2"]
    assert sorted((e.host, e.status) for e in fleet.report.events) == [("h1", "ok"), ("h3", "ok"), ("h4", "ok")]
