"""``--format json``: the event objects docs/events.md names, and nothing else on stdout."""

from __future__ import annotations

import io
from dataclasses import dataclass

from sandfleet.report.events import TaskStatus
from sandfleet.report.jsonl import task_result
from sandfleet.report.outputs import OutputOptions, make_reporter
from sandfleet_agent.portable.wire import ExecResult
from support import eventschema
from support.report_fakes import Tty, event, feed, play, task


def run_json(plays: list, unreachable: dict[str, str] | None = None, abort: str | None = None) -> list[dict]:
    out = Tty()  # a terminal, even: JSON never gets colour or a status line
    reporter = make_reporter(OutputOptions(format="json"), out, {})
    feed(reporter, plays, unreachable)
    if abort:
        reporter.play_aborted(plays[0][0], abort)
    reporter.finish()
    assert "\x1b" not in out.getvalue()
    return eventschema.parse(out.getvalue())


def test_events_and_recap() -> None:
    lines = run_json([(play(), ["a", "b", "c"], [(task("t"), [
        event("a", "t", "ok", stdout="hi\n"), event("b", "t", "failed", ignored=True),
        event("c", "t", TaskStatus.SKIPPED)]),
        (task("loop"), [event("a", "loop", "ok", item={"k": 1}, label="one", changed=False)])])],
        unreachable={"c": "connection refused"})
    a, b, c, loop, gone, recap = lines
    assert a["event"] == "task_result" and (a["host"], a["play"], a["task"]) == ("a", "deploy", "t")
    assert (a["status"], a["rc"], a["stdout"], a["backend"], a["duration_ms"], a["changed"]) == ("ok", 0, "hi\n",
                                                                                               "bwrap", 12, True)
    assert "ignored" not in a and "item" not in a and "label" not in a
    assert b["status"] == "failed" and b["ignored"] is True
    assert c == {"event": "task_result", "host": "c", "play": "deploy", "task": "t", "status": "skipped",
                 "changed": False}
    assert loop["item"] == {"k": 1} and loop["label"] == "one" and loop["changed"] is False
    assert gone == {"event": "host_unreachable", "host": "c", "message": "connection refused"}
    zero = dict.fromkeys(("ok", "changed", "failed", "unreachable", "sandbox_unavailable", "denied", "skipped",
                          "ignored", "cancelled"), 0)
    assert recap == {"event": "recap", "hosts": {"a": {**zero, "ok": 2, "changed": 1}, "b": {**zero, "ignored": 1},
                                                 "c": {**zero, "unreachable": 1, "skipped": 1}}}


def test_recap_names_an_abort_only_when_there_was_one() -> None:
    plays = [(play(), ["a"], [(task("t"), [event("a", "t", "failed")])])]
    assert "aborted" not in run_json(plays)[-1]
    assert run_json(plays, abort="max_fail_percentage 0 exceeded")[-1]["aborted"] == {
        "play": "deploy", "reason": "max_fail_percentage 0 exceeded"}


def test_new_result_fields_flow_through() -> None:
    @dataclass(frozen=True)
    class Extended(ExecResult):
        decisions: tuple[str, ...] = ()

    e = event("a", "t", "ok")
    from dataclasses import replace

    e = replace(e, result=Extended(**{**e.result.__dict__, "decisions": ("allow example.org:443",)}))
    assert task_result(e)["decisions"] == ("allow example.org:443",)


def test_non_utf8_output_round_trips() -> None:
    out = io.StringIO()
    reporter = make_reporter(OutputOptions(format="json"), out, {})
    reporter.task_event(event("a", "t", "ok", stdout="caf\udce9\n"))
    assert out.getvalue().isascii() and eventschema.parse(out.getvalue())[0]["stdout"] == "caf\udce9\n"
