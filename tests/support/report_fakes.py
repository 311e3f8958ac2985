"""Fake plays, tasks and events for the output tests: the reporters sit above the transport, so
what they are fed is plain data (the end-to-end tests in test_run_outputs.py feed real runs)."""

from __future__ import annotations

import io
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Optional

from sandfleet.report.events import Reporter, TaskEvent, TaskStatus
from sandfleet_agent.backends.base import Wrapper
from sandfleet_agent.portable.wire import ExecResult, Status


def play(name: str = "deploy", strategy: str = "linear") -> Any:
    return SimpleNamespace(name=name, strategy=strategy, hosts="all")


def task(name: str) -> Any:
    return SimpleNamespace(name=name)


def event(host: str, task_name: str, status: str = "ok", *, rc: Optional[int] = None, stdout: str = "",
          stderr: str = "", message: Optional[str] = None, ms: int = 12, backend: Optional[str] = "bwrap",
          play_name: str = "deploy", wrapper: Optional[Wrapper] = None, **kw: Any) -> TaskEvent:
    """A task result as the host loop reports it; ``rc`` defaults to what the status implies;
    ``wrapper``: what a dry-run rendered (its result carries it, as a real one does)."""
    if status == TaskStatus.SKIPPED:
        return TaskEvent(host, play_name, task_name, TaskStatus.SKIPPED, **kw)
    if rc is None and status in ("ok", "failed"):
        rc = 0 if status == "ok" else 1
    if message is None and status != "ok":
        message = {"failed": f"exited with {rc}", "timeout": "timed out after 1 s",
                   "sandbox_unavailable": "no sandbox: bubblewrap is not installed",
                   "error": "undefined variable 'x'"}.get(status)
    result = ExecResult(id=f"{host}/{task_name}", status=Status(status), rc=rc, stdout=stdout, stderr=stderr,
                        duration_ms=ms, backend=backend if status != "sandbox_unavailable" else None,
                        message=message)
    if wrapper is not None:
        result = replace(result, backend=wrapper.backend, wrapper=wrapper.argv, wrapper_files=dict(wrapper.files))
    kw.setdefault("changed", status == "ok")
    return TaskEvent(host, play_name, task_name, TaskStatus(status), result, os="linux", **kw)


def feed(reporter: Reporter, plays: list[tuple[Any, list[str], list[tuple[Any, list[TaskEvent]]]]],
         unreachable: Optional[dict[str, str]] = None) -> None:
    """Play by play, task by task (linear): task_start, then that task's events."""
    for p, hosts, tasks in plays:
        reporter.play_start(p, hosts)
        for t, events in tasks:
            reporter.task_start(p, t, hosts)
            for e in events:
                reporter.task_event(e)
    for host, message in (unreachable or {}).items():
        reporter.host_unreachable(host, message)


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True
