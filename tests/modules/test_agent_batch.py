"""Pipelining on the agent's side (docs/architecture.md §3): a batch line, its results one by one,
and the end line that says how many ran.

The agent must never run a task the controller would not have sent: it stops at the first step
whose failure the batch does not pass over, never passes over a timeout, a refusal or a request
it cannot read, and stops as soon as the controller writes anything (EOF included). Each request
of a batch is read and checked on its own, exactly as a line of its own would be. Real agents,
real commands; markers on disk prove what did not run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sandfleet_agent import agent
from sandfleet_agent.portable import wire
from sandfleet_agent.portable.policy import Effective, Limits, complete
from support.policies import WIDE

INIT = json.dumps({"v": 1, "init": {"workspace_roots": ["/"], "sandbox_pin": None}})


def converse(*lines: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    agent.serve(io.StringIO("".join(line + "\n" for line in lines)), out)
    return [json.loads(line) for line in out.getvalue().splitlines()][1:]  # after the hello


def bare(request_id: str, *argv: str, timeout: float | None = None) -> wire.ExecRequest:
    return wire.ExecRequest(id=request_id, argv=argv, sandbox=None, policy=WIDE, timeout_s=timeout)


def step(*requests: wire.ExecRequest, go_on: bool = False) -> wire.BatchStep:
    return wire.BatchStep(requests, continue_on_failure=go_on)


def batch(*steps: wire.BatchStep) -> str:
    return wire.encode_batch(steps)


def summary(replies: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [("end", str(r["batch_end"]["ran"])) if "batch_end" in r else (r["id"], r["status"]) for r in replies]


def test_the_hello_announces_batches_and_an_older_hello_means_none() -> None:
    out = io.StringIO()
    agent.serve(io.StringIO(INIT + "\n"), out)
    assert wire.decode_hello(out.getvalue().splitlines()[0]).features == (wire.BATCH_FEATURE,)
    older = json.dumps({"v": 1, "hello": {"version": "0.0.9", "facts": {"os": "linux"}}})
    assert wire.decode_hello(older).features == ()


def test_a_batch_runs_in_order_each_result_then_the_count() -> None:
    replies = converse(INIT, batch(step(bare("a", "echo", "one")),
                                   step(bare("b/0", "echo", "two"), bare("b/1", "echo", "three")),
                                   step(bare("c", "echo", "four"))))
    assert summary(replies) == [("a", "ok"), ("b/0", "ok"), ("b/1", "ok"), ("c", "ok"), ("end", "4")]
    assert [r["stdout"] for r in replies[:-1]] == ["one\n", "two\n", "three\n", "four\n"]


def test_a_failure_stops_the_batch_unless_the_controller_passes_over_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    touch = bare("t", "touch", str(marker))
    assert summary(converse(INIT, batch(step(bare("f", "false")), step(touch)))) == [("f", "failed"), ("end", "1")]
    assert not marker.exists()
    assert summary(converse(INIT, batch(step(bare("f", "false"), go_on=True), step(touch)))) == [
        ("f", "failed"), ("t", "ok"), ("end", "2")]
    assert marker.exists()


def test_every_item_of_a_step_runs_as_a_loops_items_do_then_the_step_decides(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    replies = converse(INIT, batch(step(bare("l/0", "false"), bare("l/1", "echo", "next item")),
                                   step(bare("t", "touch", str(marker)))))
    assert summary(replies) == [("l/0", "failed"), ("l/1", "ok"), ("end", "2")]
    assert not marker.exists()


def test_timeout_denied_and_unavailable_stop_even_where_failures_are_passed_over(tmp_path: Path) -> None:
    """``ignore_errors`` covers a timeout on the controller; the agent stops anyway (narrower),
    and a refusal is never passed over by anyone."""
    marker = tmp_path / "ran"
    touch = bare("t", "touch", str(marker))
    slow = bare("s", "sleep", "5", timeout=0.2)
    refused = dataclasses.replace(bare("d", "true"), policy=Effective())  # unsandboxed under the default
    unreadable = json.loads(wire.encode_request(bare("u", "true")))
    unreadable["sandbox"] = {"network": {"mode": "quantum"}}  # a newer controller's mode: unenforceable here
    for first, status in ((slow, "timeout"), (refused, "denied")):
        assert summary(converse(INIT, batch(step(first, go_on=True), step(touch)))) == [
            (first.id, status), ("end", "1")]
    line = json.loads(batch(step(bare("u", "true"), go_on=True), step(touch)))
    line["batch"][0]["requests"][0] = unreadable
    assert summary(converse(INIT, json.dumps(line))) == [("u", "sandbox_unavailable"), ("end", "1")]
    assert not marker.exists()


def test_a_bad_request_gets_its_own_error_and_stops_the_batch_where_it_is(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    line = json.loads(batch(step(bare("a", "true"), bare("b", "true"), bare("c", "touch", str(marker)), go_on=True)))
    line["batch"][0]["requests"][1]["argv"] = "true"  # a shell string: refused, as on a line of its own
    replies = converse(INIT, json.dumps(line), wire.encode_request(bare("after", "true")))
    assert summary(replies) == [("a", "ok"), ("b", "error"), ("end", "2"), ("after", "ok")]
    assert "argv must be a list" in replies[1]["message"]
    assert not marker.exists()


def test_each_request_is_checked_on_its_own_and_nothing_carries_over_to_the_next() -> None:
    """A wide request first must not loosen the one after it: the second, unsandboxed under the
    built-in policy, is refused as it would be alone."""
    allowed, refused = bare("wide", "true"), dataclasses.replace(bare("narrow", "true"), policy=Effective())
    assert summary(converse(INIT, batch(step(allowed), step(refused)))) == [
        ("wide", "ok"), ("narrow", "denied"), ("end", "2")]
    assert summary(converse(INIT, wire.encode_request(refused))) == [("narrow", "denied")]


@pytest.mark.parametrize("slack", [0, -1])
def test_request_bytes_bounds_each_request_of_a_batch_as_a_line_of_its_own(slack: int) -> None:
    request = bare("big", "echo", "x" * 2000)
    size = len(wire.encode_request(request)) + 1  # the line the agent would read, newline included
    small = Effective((complete(dataclasses.replace(WIDE.operator, limits=Limits(request_bytes=size + slack))),))
    request = dataclasses.replace(request, policy=small)
    size = len(wire.encode_request(request)) + 1  # the policy travels in the request: measure again
    small = Effective((complete(dataclasses.replace(WIDE.operator, limits=Limits(request_bytes=size + slack))),))
    request = dataclasses.replace(request, policy=small)
    assert len(wire.encode_request(request)) + 1 == size  # same digits, same length
    alone = converse(INIT, wire.encode_request(request))[0]["status"]
    batched = converse(INIT, batch(step(bare("first", "true")), step(request)))
    assert alone == ("ok" if slack == 0 else "denied")
    assert summary(batched) == [("first", "ok"), ("big", alone), ("end", "2")]


@pytest.mark.parametrize("change", [
    lambda b: b.update(extra=1),
    lambda b: b["batch"][0].update(later=True),
    lambda b: b.update(batch=[]),
    lambda b: b["batch"][0].update(requests=[]),
    lambda b: b["batch"][0].update(continue_on_failure="yes"),
    lambda b: b.update(v=2),
    lambda b: b.update(batch=[b["batch"][0]] * (wire.MAX_BATCH_REQUESTS + 1)),
], ids=["unknown key", "unknown step key", "no step", "empty step", "flag not a boolean", "version", "too many"])
def test_a_malformed_batch_runs_nothing_says_why_and_the_agent_goes_on(change: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    line = json.loads(batch(step(bare("t", "touch", str(marker)))))
    change(line)
    replies = converse(INIT, json.dumps(line), wire.encode_request(bare("after", "true")))
    assert replies[0]["batch_end"]["ran"] == 0 and replies[0]["batch_end"]["error"].startswith("bad batch:")
    assert summary(replies[1:]) == [("after", "ok")]
    assert not marker.exists()


def test_eof_during_a_batch_kills_the_running_task_and_runs_nothing_after(tmp_path: Path) -> None:
    tag = f"batchcancel{os.getpid()}"
    marker = tmp_path / "ran"
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet_agent.agent"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(INIT + "\n" + batch(step(bare("a", "true")),
                                         step(bare("s", "bash", "-c", f"exec -a {tag} sleep 300"), go_on=True),
                                         step(bare("t", "touch", str(marker)))) + "\n")
    proc.stdin.flush()
    proc.stdout.readline()  # hello
    assert json.loads(proc.stdout.readline())["status"] == "ok"
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.stdin.close()
    cancelled, end = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
    assert proc.wait(timeout=10) == 0
    proc.stdout.close()
    assert cancelled["status"] == "error" and "cancelled" in cancelled["message"]
    assert end == {"v": 1, "batch_end": {"ran": 2}}
    assert not marker.exists()
    assert subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode == 1


class TestWire:
    def test_goes_on_is_never_wider_than_ignore_errors(self) -> None:
        passed = {s for s in wire.Status if wire.goes_on(s, True)}
        assert passed == {wire.Status.OK, wire.Status.FAILED, wire.Status.ERROR}
        assert {s for s in wire.Status if wire.goes_on(s, False)} == {wire.Status.OK}

    def test_a_batch_needs_requests_within_the_bound(self) -> None:
        with pytest.raises(wire.WireError):
            wire.encode_batch([])
        with pytest.raises(wire.WireError):
            wire.encode_batch([wire.BatchStep(())])
        with pytest.raises(wire.WireError):
            wire.encode_batch([step(*[bare(f"r{i}", "true") for i in range(wire.MAX_BATCH_REQUESTS + 1)])])

    def test_each_request_in_a_batch_is_encoded_as_alone(self) -> None:
        request = bare("a", "echo", "\udcff")
        line = json.loads(wire.encode_batch([step(request)]))
        assert json.dumps(line["batch"][0]["requests"][0], separators=(",", ":")) == wire.encode_request(request)

    def test_the_end_line_is_read_strictly(self) -> None:
        assert wire.reply_from_json({"v": 1, "batch_end": {"ran": 3}}) == wire.BatchEnd(3)
        for bad in ({"v": 1, "batch_end": {"ran": -1}}, {"v": 1, "batch_end": {"ran": True}},
                    {"v": 1, "batch_end": {"ran": 1, "more": 1}}, {"v": 1, "batch_end": {}, "x": 1},
                    {"v": 2, "batch_end": {"ran": 1}}):
            with pytest.raises(wire.WireError):
                wire.reply_from_json(bad)
        assert isinstance(wire.reply_from_json(json.loads(wire.encode_result(wire.ExecResult("a", wire.Status.OK)))),
                          wire.ExecResult)
