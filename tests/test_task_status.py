"""A task's status: every answer a host can give, plus ``skipped``, compared and printed as its word."""

from __future__ import annotations

import json

from sandfleet.report.events import TaskStatus
from sandfleet_agent.portable.wire import Status


def test_every_wire_status_has_a_task_status_and_only_skipped_and_cancelled_are_added() -> None:
    assert {TaskStatus.of(s).value for s in Status} == {s.value for s in Status}
    assert {t.value for t in TaskStatus} - {s.value for s in Status} == {"skipped", "cancelled"}


def test_it_prints_and_serialises_as_its_word() -> None:
    assert f"{TaskStatus.SANDBOX_UNAVAILABLE}" == str(TaskStatus.SANDBOX_UNAVAILABLE) == "sandbox_unavailable"
    assert json.dumps({"status": TaskStatus.DENIED}) == '{"status": "denied"}'
    assert TaskStatus.OK == "ok"  # conditions and registered results compare it with strings


def test_refused_is_what_the_host_would_not_run() -> None:
    assert {t for t in TaskStatus if t.refused} == {TaskStatus.SANDBOX_UNAVAILABLE, TaskStatus.DENIED}
