"""``--format json``: one JSON object per line on stdout and nothing else (DESIGN §8).

:func:`task_result` is also what the results directory stores, so a CI job reading either sees
the same objects. Results are serialised with :func:`dataclasses.asdict`, so a field added to
``ExecResult`` appears here without a change.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from enum import Enum
from typing import Any, Optional, TextIO

from sandfleet.events import Reporter, TaskEvent
from sandfleet.modules.wire import request_to_json
from sandfleet.recap import HostTally, Recap


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


def task_result(event: TaskEvent) -> dict[str, Any]:
    """The ``task_result`` event: host, play, task, every ExecResult field, status and flags."""
    obj: dict[str, Any] = {"event": "task_result", "host": event.host, "play": event.play, "task": event.task}
    if event.result is not None:
        obj.update(asdict(event.result))
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


def dry_run_object(event: TaskEvent) -> dict[str, Any]:
    """``--dry-run --format json``: the rendered request and exact wrapper per host and task."""
    obj: dict[str, Any] = {"host": event.host, "play": event.play, "task": event.task, "os": event.os,
                           "status": event.status}
    if event.request is not None:
        obj["request"] = request_to_json(event.request)  # what encode_request sends, as an object
    if event.wrapper is not None:
        obj["backend"] = event.wrapper.backend
        obj["wrapper"] = {"argv": list(event.wrapper.argv), "files": dict(event.wrapper.files)}
    else:
        obj["backend"] = None
        obj["wrapper"] = None
    if event.result is not None:
        obj["message"] = event.result.message
        obj["warnings"] = list(event.result.warnings)
        obj["policy_sources"] = list(event.result.policy_sources)
        obj["policy_digest"] = event.result.policy_digest
    return obj


class JsonReporter(Reporter):
    """Events as they happen, the recap at the end; the recap itself is kept by the caller."""

    def __init__(self, out: TextIO, recap: Recap, dry_run: bool = False) -> None:
        self.out, self.recap, self.dry_run = out, recap, dry_run
        self._lock = threading.Lock()

    def _emit(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self.out.write(dumps(obj) + "\n")
            self.out.flush()

    def task_event(self, event: TaskEvent) -> None:
        self._emit(dry_run_object(event) if self.dry_run else task_result(event))

    def host_unreachable(self, host: str, message: str) -> None:
        self._emit({"event": "host_unreachable", "host": host, "message": message})

    def finish(self) -> None:
        if not self.dry_run:
            self._emit(recap_object(self.recap))


__all__ = ["JsonReporter", "dry_run_object", "dumps", "recap_object", "tally_object", "task_result"]
