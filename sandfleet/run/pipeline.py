"""Pipelining: which tasks a host may be sent together, in one batch, so K tasks cost one round trip.

A linear play waits for one round trip per task and host (issue 20, docs/performance.md). When
nothing in the play can observe the difference, the host loop sends a host the requests of the
tasks ahead in one line; the agent runs them in order and stops at the first failure the
controller would not pass over (docs/architecture.md §3); the controller still reports every
result in the play's order, as the scheduler reaches it. Nothing may change but the wait:

- **The play** (:func:`refusal`): ``run_once``, ``any_errors_fatal``, ``max_fail_percentage``
  and ``serial`` make a host's next task depend on the other hosts (the scheduler stops it, or
  runs the task elsewhere), so a play with any of them is never pipelined, whatever its
  strategy. Without them a host's tasks depend only on its own results, under ``linear`` and
  ``free`` alike: lock-step only decides when each result is reported.
- **A task that follows another in a batch** (:meth:`Plan.after`) is rendered ahead, before the
  results of the tasks before it are known. So it may not read (:func:`reads`) a variable a
  task earlier in the batch registers, directly or through variables whose values are
  templates, nor one of :data:`BARRIERS`, which change as other hosts progress. The host loop
  checks that per host (host variables differ), with the host's own values; this module says
  what it checks. A loop with ``pause`` waits between items on purpose: never pipelined.
- **A task with** ``failed_when`` **or** ``changed_when`` is judged by the controller after its
  result, so it ends its batch: the agent cannot know the verdict it must stop on.
- **A loop's items** go in one batch in every play (one step: the agent runs every item, as the
  host loop does), unless it pauses between items, or its conditions set its own ``register``
  between items and its items read it. Nothing another host does changes while one task runs.

What the agent may pass over is :func:`sandfleet_agent.portable.wire.goes_on`: never more than
``ignore_errors`` covers (mirrored from the host loop's ``_ignorable``), so an agent never runs a
task the controller would not have sent; when it stops where the controller goes on (an ignored
timeout), the controller sends the rest as a new batch. ``sandfleet_pipelining: false`` in the
inventory turns all of this off for a host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from sandfleet.load.playbook import Play, Task
from sandfleet.run.fleetvars import FLEET_NAMES
from sandfleet.templating import names_read

#: Variables whose values change while a play runs, as other hosts register results, fail or
#: finish (``hostvars`` and the play's host lists: :data:`~sandfleet.run.fleetvars.FLEET_NAMES`),
#: or that reach every variable by name (Ansible's ``vars``): a task reading one is never
#: rendered ahead of the task before it.
BARRIERS = frozenset({*FLEET_NAMES, "vars"})

#: The most bytes of requests one batch carries (each request is bounded by the policy's
#: ``limits.request_bytes`` on its own); past it the next task waits for a batch of its own.
BATCH_BYTES = 4 << 20


@dataclass(frozen=True)
class Plan:
    """A play's pipelining: for each selected task, the tasks that may follow it in its batch."""

    following: Mapping[int, tuple[tuple[int, Task], ...]] = field(default_factory=dict)

    def after(self, task_index: int) -> tuple[tuple[int, Task], ...]:
        return self.following.get(task_index, ())


NO_PLAN = Plan()


def refusal(play: Play) -> Optional[str]:
    """Why ``play`` is never pipelined (a keyword that makes hosts observe each other), or None."""
    if play.any_errors_fatal:
        return "any_errors_fatal"
    if play.max_fail_percentage is not None:
        return "max_fail_percentage"
    if play.serial:
        return "serial"
    if any(task.run_once for task in play.tasks):
        return "run_once"
    return None


def plan(play: Play, tasks: list[tuple[int, Task]]) -> Plan:
    """The batches ``tasks`` (the play's tasks the tags and ``--start-at-task`` select, in order)
    may form, as far as the playbook alone says; :func:`reads` is the per-host rest."""
    if refusal(play) is not None:
        return NO_PLAN
    following: dict[int, tuple[tuple[int, Task], ...]] = {}
    for at, (index, task) in enumerate(tasks):
        if not pipelined(task) or ends_batch(task):
            continue
        ahead: list[tuple[int, Task]] = []
        for later in tasks[at + 1:]:
            if not pipelined(later[1]):
                break
            ahead.append(later)
            if ends_batch(later[1]):
                break
        if ahead:
            following[index] = tuple(ahead)
    return Plan(following)


def pipelined(task: Task) -> bool:
    """A loop that pauses between items runs as written, one request at a time."""
    return not (task.loop is not None and task.loop_control.pause) and not task.run_once


def ends_batch(task: Task) -> bool:
    """The controller judges this task's result itself before anything after it may run."""
    return task.failed_when is not None or task.changed_when is not None


def rendered_ahead(task: Task) -> list[tuple[str, Any]]:
    """What the host loop renders before a task's request is sent (so, in a batch, before the
    results of the tasks ahead of it are known): ``when``, ``loop``, the label and every field of
    ``exec`` (all of them, so a field added later is covered too). ``failed_when`` and
    ``changed_when`` are not here: they are evaluated when the result is read, in the play's order."""
    return [("when", task.when and "{{ " + task.when + " }}"), ("loop", task.loop),
            ("loop_control.label", task.loop_control.label),
            *((f"exec.{f.name}", getattr(task.exec, f.name)) for f in dataclasses.fields(task.exec))]


def reads(value: Any, names: Collection[str], raw: Callable[[str], Any], seen: Optional[set[str]] = None) -> set[str]:
    """Which of ``names`` the templates in ``value`` read, directly or through variables whose
    values (``raw``: a host's variable as written) are templates themselves."""
    seen = set() if seen is None else seen
    out: set[str] = set()
    if isinstance(value, str):
        for name in names_read(value):
            if name in names:
                out.add(name)
            elif name not in seen:
                seen.add(name)
                out |= reads(raw(name), names, raw, seen)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            out |= reads(key, names, raw, seen) | reads(item, names, raw, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            out |= reads(item, names, raw, seen)
    return out


def task_reads(task: Task, names: Collection[str], raw: Callable[[str], Any]) -> set[str]:
    """Which of ``names`` (results registered earlier in the batch, :data:`BARRIERS`) the fields
    rendered ahead of ``task``'s request read."""
    seen: set[str] = set()
    out: set[str] = set()
    for _what, value in rendered_ahead(task):
        out |= reads(value, names, raw, seen)
    return out
