"""``--format json``: one JSON object per line on stdout and nothing else.

One event schema for a run and a dry-run (``docs/events.md``, ``docs/events.schema.json``):
``run_start`` first (the sandfleet and schema versions), ``play_start`` and ``task_start`` as plays
and tasks begin (progress, so a consumer can show what is running before any result), a
``task_result`` per host and task (a dry-run's carry ``dry_run: true`` and the wrapper that *would*
run), ``host_unreachable``, and the ``recap`` last. :func:`task_result` is also what the results
directory stores, so a CI job reading either sees the same objects. Results are serialised field by
field (:func:`result_fields`), so a field added to ``ExecResult`` appears here without a change. Every
task result records the request as sent (:func:`request_record`: argv, cwd, the names of its
environment variables, the timeout and the portable intent; values of the environment are left out,
they may be secrets).
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import asdict, fields, is_dataclass
from enum import Enum
from typing import Any, Optional, TextIO

from sandfleet import __version__
from sandfleet.load.playbook import Play, Task
from sandfleet.report.events import Reporter, TaskEvent
from sandfleet.report.recap import HostTally, Recap
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, request_to_json


def dumps(obj: Any, indent: Optional[int] = None) -> str:
    """ASCII JSON (one line unless ``indent``); lone surrogates (non-UTF-8 output) stay ``\\udcXX``
    escapes, which Python reads back exactly."""
    return json.dumps(obj, ensure_ascii=True, default=_plain, indent=indent)


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


#: The version of the event schema (``docs/events.schema.json``); bumped on a breaking change.
SCHEMA_VERSION = 1


def run_start(dry_run: bool) -> dict[str, Any]:
    return {"event": "run_start", "sandfleet": __version__, "schema": SCHEMA_VERSION, "dry_run": dry_run}


def play_start(play: Play, hosts: list[str]) -> dict[str, Any]:
    """The ``play_start`` event: the play's name and the hosts it targets (after ``--limit``)."""
    return {"event": "play_start", "play": play.name, "hosts": list(hosts)}


def task_start(play: Play, task: Task, hosts: list[str]) -> dict[str, Any]:
    """The ``task_start`` event: a task begins on ``hosts`` (once per batch; once per host under
    ``strategy: free``; the first host only for ``run_once``)."""
    return {"event": "task_start", "play": play.name, "task": task.name, "hosts": list(hosts)}


def request_record(request: ExecRequest) -> dict[str, Any]:
    """The request as the host received it, for the record: everything but the values of its
    environment (names only) and the policy layers (``policy_sources``/``policy_digest`` say which)."""
    obj = dict(request_to_json(request))
    obj.pop("policy", None)
    obj["env"] = sorted(request.env)
    return obj


#: Values shared as they are: immutable, so a copy would be equal and indistinguishable.
_ATOMIC = (str, int, float, bool, type(None))


def result_fields(result: ExecResult) -> dict[str, Any]:
    """The result's fields as :func:`dataclasses.asdict` gives them, minus its deep copy of every
    string: asdict deep-copies each of the ~70 words of a bwrap wrapper one call at a time (~70 µs a
    result, and every task result is recorded twice: the output and the API's collector)."""
    return {f.name: _copied(getattr(result, f.name)) for f in fields(result)}


def _copied(value: Any) -> Any:
    """asdict's copy of one value: immutable words and tuples of them shared, dicts and lists copied."""
    if type(value) in _ATOMIC or isinstance(value, Enum):
        return value
    if type(value) is tuple and all(type(v) is str for v in value):
        return value
    if type(value) is dict:
        return {k: _copied(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_copied(v) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return copy.deepcopy(value)


def task_result(event: TaskEvent, dry_run: bool = False) -> dict[str, Any]:
    """The ``task_result`` event: host, play, task, every ExecResult field, status and flags."""
    obj: dict[str, Any] = {"event": "task_result", "host": event.host, "play": event.play, "task": event.task}
    if dry_run:
        obj["dry_run"] = True
    if event.os is not None:
        obj["os"] = event.os
    if event.result is not None:
        obj.update(result_fields(event.result))
    if event.request is not None:
        obj["request"] = request_record(event.request)
    obj["status"] = event.status
    obj["changed"] = event.changed
    if event.ignored:
        obj["ignored"] = True
    if event.run_once:
        obj["run_once"] = True
    if event.item is not None or event.label is not None:
        obj["item"] = event.item
        if event.label is not None:
            obj["label"] = event.label
    return obj


def tally_object(t: HostTally) -> dict[str, int]:
    return asdict(t)


def recap_object(recap: Recap) -> dict[str, Any]:
    obj: dict[str, Any] = {"event": "recap", "hosts": {h: tally_object(t) for h, t in recap.hosts.items()}}
    if recap.aborted is not None:
        obj["aborted"] = {"play": recap.aborted.play, "reason": recap.aborted.reason}
    return obj


class JsonReporter(Reporter):
    """Events as they happen, the recap at the end; the recap itself is kept by the caller."""

    def __init__(self, out: TextIO, recap: Recap, dry_run: bool = False) -> None:
        self.out, self.recap, self.dry_run = out, recap, dry_run
        self._lock = threading.Lock()
        self._started = False

    def _emit(self, obj: dict[str, Any]) -> None:
        """Write one event; ``run_start`` goes first, with the first event (a run stopped by bad
        input before any host started writes nothing at all)."""
        with self._lock:
            if not self._started:
                self._started = True
                self.out.write(dumps(run_start(self.dry_run)) + "\n")
            self.out.write(dumps(obj) + "\n")
            self.out.flush()

    def play_start(self, play: Play, hosts: list[str]) -> None:
        self._emit(play_start(play, hosts))

    def task_start(self, play: Play, task: Task, hosts: list[str]) -> None:
        self._emit(task_start(play, task, hosts))

    def task_event(self, event: TaskEvent) -> None:
        self._emit(task_result(event, self.dry_run))

    def host_unreachable(self, host: str, message: str) -> None:
        self._emit({"event": "host_unreachable", "host": host, "message": message})

    def finish(self) -> None:
        self._emit(recap_object(self.recap))


__all__ = ["SCHEMA_VERSION", "JsonReporter", "dumps", "play_start", "recap_object", "request_record", "result_fields",
           "run_start", "tally_object", "task_result", "task_start"]
