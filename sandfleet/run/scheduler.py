"""Hosts in parallel (up to ``forks``), play after play, batch after batch, as Ansible orders them.

One connection per host for the whole run. ``strategy: linear`` (the default) runs a task on every
host of the batch before any host starts the next; ``free`` lets each host run ahead. A host that
fails or becomes unreachable drops out of later tasks and plays; it never blocks or loses the
results of the others.

Batch rules, with the cases Ansible users have filed as surprising decided on purpose:

- A host *fails* a batch when a task fails on it (not ignored), its sandbox cannot be provided,
  or it becomes unreachable. Unreachable hosts count toward ``max_fail_percentage`` (Ansible
  counts only failed hosts there, so a fleet that drops off the network sailed past the limit).
- ``max_fail_percentage: P`` aborts when more than P % of the batch has failed, checked after
  every task (linear) or every host's task (free). ``100`` therefore never aborts, not even when
  the whole batch fails (Ansible stops the play then, whatever the setting said).
- Without ``max_fail_percentage``, a batch in which every host failed stops the run, as in
  Ansible: the remaining batches and plays would repeat the same mistake on more hosts.
- ``any_errors_fatal`` aborts after the first failure in the batch (linear: once the current
  task has finished on every host of the batch; free: before any host starts another task).
- An abort ends the run: no more tasks, batches or plays. It is reported with its reason, and
  the exit code keeps the failure's bits; it is never 0 when anything failed.
- ``run_once`` runs on the first host of the batch (free: the first host to reach it); every
  host of the batch registers its result, and its failure fails them all (as in Ansible).
- ``--start-at-task`` (``start``, a play and task index) skips every task before it, across
  plays, as Ansible does; the plays before it still start (and show their hosts), running nothing.
- An interrupt (Ctrl-C, ``Fleet.cancel``: :meth:`HostSet.interrupt`) records every task in flight
  as ``cancelled`` on its host, then kills them; tasks not yet started are not recorded.
- Pipelining (:mod:`sandfleet.run.pipeline`) changes none of this: where no rule above lets one
  host observe another, a host is sent the tasks ahead with the one it starts, and each result
  is still taken and reported when the scheduler reaches its task.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from sandfleet.inventory import HostConfig, Inventory
from sandfleet.load.keywords import TagFilter, batches
from sandfleet.load.playbook import Play, Playbook, Task
from sandfleet.report.events import Reporter
from sandfleet.run import pipeline
from sandfleet.run.fleetvars import FleetVars
from sandfleet.run.hostloop import HostRun, TaskOutcome
from sandfleet.transports.base import Connection
from sandfleet_agent.portable.policy import Policy

#: Hosts at once. `python bench/fleet.py --hosts 40 --forks-sweep 5,10,20,40` on loopback (where the
#: hosts share the controller's 2 cores) is flat from 5 to 40 (5.6-6.8 s); on a real fleet each host
#: thread mostly waits on the network and the controller spends ~4 ms CPU per task, so 20 keeps 2
#: cores busy without the connect storm that hundreds of paramiko handshakes cause (paramiko#2250).
DEFAULT_FORKS = 20
ALL_TASKS = TagFilter()


class Batch:
    """One ``serial`` batch of a play: who failed in it, and whether the run must stop."""

    def __init__(self, play: Play, hosts: list[str]) -> None:
        self.play, self.hosts = play, hosts
        self.failed: list[str] = []
        self.abort: Optional[str] = None
        self._lock = threading.Lock()

    def record(self, host: str, task: Task, outcome: TaskOutcome) -> None:
        if not outcome.failed:
            return
        with self._lock:
            if host in self.failed:
                return
            self.failed.append(host)
            if self.abort is None and self.play.any_errors_fatal:
                self.abort = f"any_errors_fatal: {host} failed {task.name!r}"
            limit = self.play.max_fail_percentage
            share = 100.0 * len(self.failed) / len(self.hosts)
            if self.abort is None and limit is not None and share > limit:
                self.abort = (f"max_fail_percentage {limit:g}% exceeded: {len(self.failed)} of {len(self.hosts)} "
                              f"host(s) of the batch failed ({share:.0f}%)")

    def finished(self) -> None:
        """After the batch: a batch in which every host failed stops the run (unless a limit says otherwise)."""
        if self.abort is None and self.play.max_fail_percentage is None and self.hosts \
                and len(self.failed) == len(self.hosts):
            self.abort = f"every host of the batch failed ({', '.join(self.failed)}); the run stops"


class _Once:
    """``run_once`` under the free strategy: the first host to reach the task runs it, the others wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[int, threading.Event] = {}
        self._outcomes: dict[int, TaskOutcome] = {}

    def claim(self, task_index: int) -> Optional[threading.Event]:
        """None if this caller runs the task; else the event to wait for."""
        with self._lock:
            if task_index in self._started:
                return self._started[task_index]
            self._started[task_index] = threading.Event()
            return None

    def publish(self, task_index: int, outcome: TaskOutcome) -> None:
        self._outcomes[task_index] = outcome
        self._started[task_index].set()

    def outcome(self, task_index: int) -> TaskOutcome:
        return self._outcomes[task_index]


class HostSet:
    """The hosts of a run, or of an open fleet that serves many: one :class:`HostRun` (its
    variables, facts and connection) per host, and the threads that drive them. Every host's
    settings (inventory vars, ssh_config) are checked here, before anything runs; connections
    open lazily, on a host's first task, and stay open until :meth:`close`."""

    def __init__(self, inventory: Inventory, hosts: list[str], connect: Callable[[HostConfig], Connection], *,
                 forks: Optional[int] = None, consent: bool = False, extra_vars: Optional[Mapping[str, Any]] = None,
                 policy: Optional[Policy] = None, playbook_dir: str = ".", fleet_vars: bool = True) -> None:
        self.stopping = threading.Event()
        self.runs: dict[str, HostRun] = {}
        try:
            for host in hosts:
                config = inventory.host_config(host, extra_vars)
                self.runs[host] = HostRun(config, functools.partial(inventory.renderer, host), connect(config),
                                          Reporter(), consent=consent, playbook_dir=os.path.abspath(playbook_dir),
                                          stopping=self.stopping, extra_vars=extra_vars, policy=policy)
        except BaseException:
            self.close()
            raise
        #: ``hostvars`` and the play's host lists (run/fleetvars.py); None for an open fleet's
        #: independent commands (``fleet_vars=False``), whose caller sees no other host.
        self.fleet = FleetVars(inventory, self.runs, extra_vars or {}, os.path.abspath(playbook_dir)) \
            if fleet_vars else None
        for run in self.runs.values():
            run.fleet = self.fleet
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(forks or DEFAULT_FORKS, len(hosts) or 1)),
                                        thread_name_prefix="host")

    def play(self, playbook: Playbook, targets: list[list[str]], reporter: Reporter,
             tags: TagFilter = ALL_TASKS, start: Optional[tuple[int, int]] = None) -> None:
        """Run ``playbook``'s plays, each on its ``targets`` (hosts of this set), reporting to
        ``reporter``. A host that failed an earlier playbook takes part again; one that was given
        up as unreachable is tried again and reported again if it still is."""
        for run in self.runs.values():
            run.begin(reporter)
        try:
            _run_plays(playbook, targets, self.runs, reporter, self._pool, tags, start, self.fleet)
        except BaseException:
            # Ctrl-C (or a bug): stop every host now.
            self.interrupt()
            raise

    def interrupt(self) -> None:
        """Stop every host now, from any thread: first each task in flight is reported
        ``cancelled`` (on every host, remote ones too, before the outputs write their files),
        then the connections close, which makes each agent kill its task's process group; the
        host threads then drain without reporting anything more."""
        for run in self.runs.values():
            run.cancel()
        self.stopping.set()
        for run in self.runs.values():
            run.connection.close()

    def close(self) -> None:
        """Wait for the host threads, then release every connection (each agent then exits)."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        for run in self.runs.values():
            run.connection.close()


def run_playbook(
    playbook: Playbook,
    inventory: Inventory,
    reporter: Reporter,
    connect: Callable[[HostConfig], Connection],
    *,
    limit: Optional[str] = None,
    forks: Optional[int] = None,
    consent: bool = False,
    extra_vars: Optional[Mapping[str, Any]] = None,
    tags: TagFilter = ALL_TASKS,
    policy: Optional[Policy] = None,
) -> dict[str, HostRun]:
    targets = [inventory.select(play.hosts, limit) for play in playbook.plays]
    hosts = HostSet(inventory, list(dict.fromkeys(h for hosts in targets for h in hosts)), connect, forks=forks,
                    consent=consent, extra_vars=extra_vars, policy=policy,
                    playbook_dir=os.path.dirname(os.path.abspath(playbook.path)))
    try:
        hosts.play(playbook, targets, reporter, tags)
    finally:
        hosts.close()
    return hosts.runs


def _run_plays(playbook: Playbook, targets: list[list[str]], runs: dict[str, HostRun], reporter: Reporter,
               pool: ThreadPoolExecutor, tags: TagFilter, start: Optional[tuple[int, int]] = None,
               fleet: Optional[FleetVars] = None) -> None:
    for play_index, play in enumerate(playbook.plays):
        hosts = [h for h in targets[play_index] if not runs[h].done]
        reporter.play_start(play, hosts)
        tasks = [(i, t) for i, t in enumerate(play.tasks)
                 if tags.selects(t.tags) and (start is None or (play_index, i) >= start)]
        if not tasks:
            continue
        for members in batches(hosts, play.serial):
            batch = Batch(play, members)
            if fleet is not None:
                fleet.batch(play, hosts, members)  # what hostvars and ansible_play_* show (run/fleetvars.py)
            if play.strategy == "free":
                _run_free(play_index, play, tasks, batch, runs, reporter, pool)
            else:
                _run_linear(play_index, play, tasks, batch, runs, reporter, pool)
            batch.finished()
            if batch.abort is not None:
                reporter.play_aborted(play, batch.abort)
                return


def _run_linear(play_index: int, play: Play, tasks: list[tuple[int, Task]], batch: Batch,
                runs: dict[str, HostRun], reporter: Reporter, pool: ThreadPoolExecutor) -> None:
    plan = pipeline.plan(play, tasks)  # which tasks a host may be sent at once (run/pipeline.py)
    for task_index, task in tasks:
        active = [h for h in batch.hosts if not runs[h].done]
        if not active or batch.abort is not None or runs[active[0]].stopping.is_set():
            return
        reporter.task_start(play, task, active[:1] if task.run_once else active)
        if task.run_once:
            first = runs[active[0]].run_task(play_index, play, task_index, task)
            batch.record(active[0], task, first)
            adopt = functools.partial(_adopt, runs, play_index, play, task, first)
            outcomes = zip(active[1:], pool.map(adopt, active[1:]))
        else:
            run = functools.partial(_run_task, runs, play_index, play, task_index, task, plan.after(task_index))
            outcomes = zip(active, pool.map(run, active))
        for host, outcome in outcomes:
            batch.record(host, task, outcome)


def _run_task(runs: dict[str, HostRun], play_index: int, play: Play, task_index: int, task: Task,
              ahead: tuple[tuple[int, Task], ...], host: str) -> TaskOutcome:
    return runs[host].run_task(play_index, play, task_index, task, ahead)


def _adopt(runs: dict[str, HostRun], play_index: int, play: Play, task: Task, first: TaskOutcome,
           host: str) -> TaskOutcome:
    return runs[host].adopt(play_index, play, task, first)


def _run_free(play_index: int, play: Play, tasks: list[tuple[int, Task]], batch: Batch,
              runs: dict[str, HostRun], reporter: Reporter, pool: ThreadPoolExecutor) -> None:
    once = _Once()
    plan = pipeline.plan(play, tasks)

    def host_loop(host: str) -> None:
        run = runs[host]
        for task_index, task in tasks:
            if run.done or batch.abort is not None or run.stopping.is_set():
                return
            if task.run_once:
                waiting = once.claim(task_index)
                if waiting is None:
                    reporter.task_start(play, task, [host])
                    outcome = TaskOutcome(unreachable=True)  # what the others see if this thread dies
                    try:
                        outcome = run.run_task(play_index, play, task_index, task)
                    finally:
                        once.publish(task_index, outcome)
                else:
                    while not waiting.wait(0.2):
                        if run.stopping.is_set():
                            return
                    outcome = run.adopt(play_index, play, task, once.outcome(task_index))
            else:
                reporter.task_start(play, task, [host])
                outcome = run.run_task(play_index, play, task_index, task, plan.after(task_index))
            batch.record(host, task, outcome)

    for future in [pool.submit(host_loop, h) for h in batch.hosts]:
        future.result()
