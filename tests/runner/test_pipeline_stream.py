"""The controller's side of a batch (``AgentStream``): one line out, each result read in order.

Against a real local agent: a batch costs one line, and when the agent stops where the controller
goes on (an ignored timeout) the rest goes again as a new batch. Against scripted replies (the
protocol's edges no correct agent produces): an agent that runs past where it had to stop, answers
out of order or miscounts is given up as unreachable, never believed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandfleet.transports.base import AgentInit, AgentStream, HostUnreachable
from sandfleet.transports.local import LocalConnection
from sandfleet_agent.portable import wire
from support.policies import WIDE


def bare(request_id: str, *argv: str, timeout: float | None = None) -> wire.ExecRequest:
    return wire.ExecRequest(id=request_id, argv=argv, sandbox=None, policy=WIDE, timeout_s=timeout)


@pytest.fixture
def local() -> Iterator[LocalConnection]:
    connection = LocalConnection("here")
    connection.start(AgentInit(("/",)))
    try:
        yield connection
    finally:
        connection.close()


def stream_of(connection: LocalConnection) -> AgentStream:
    stream = connection._stream
    assert stream is not None
    return stream


def test_a_batch_is_one_line_and_each_result_comes_back_in_order(local: LocalConnection, tmp_path: Path) -> None:
    assert local.pipelines
    requests = [bare("a", "echo", "a"), bare("b/0", "echo", "b0"), bare("b/1", "echo", "b1"), bare("c", "echo", "c")]
    before = stream_of(local).lines_sent
    assert local.pipeline([wire.BatchStep(tuple(requests[:1])), wire.BatchStep(tuple(requests[1:3])),
                           wire.BatchStep(tuple(requests[3:]))])
    assert [local.execute(r).stdout for r in requests] == ["a\n", "b0\n", "b1\n", "c\n"]
    assert stream_of(local).lines_sent - before == 1
    assert local.execute(bare("alone", "echo", "alone")).stdout == "alone\n"  # the stream is clean after it


def test_where_the_agent_stops_but_the_controller_goes_on_the_rest_is_a_new_batch(
        local: LocalConnection, tmp_path: Path) -> None:
    slow, after, last = bare("slow", "sleep", "5", timeout=0.2), bare("after", "echo", "after"), bare("last", "true")
    before = stream_of(local).lines_sent
    local.pipeline([wire.BatchStep((slow,), continue_on_failure=True), wire.BatchStep((after,)),
                    wire.BatchStep((last,))])
    assert local.execute(slow).status is wire.Status.TIMEOUT  # the agent stopped here (goes_on)
    assert local.execute(after).stdout == "after\n"  # ignored by the controller: the rest is sent again
    assert local.execute(last).status is wire.Status.OK
    assert stream_of(local).lines_sent - before == 2


def test_a_request_the_batch_did_not_expect_reads_the_batch_to_its_end_first(local: LocalConnection) -> None:
    a, b = bare("a", "echo", "a"), bare("b", "echo", "b")
    local.pipeline([wire.BatchStep((a,)), wire.BatchStep((b,))])
    assert local.execute(a).stdout == "a\n"
    assert local.execute(bare("other", "echo", "other")).stdout == "other\n"
    assert local.execute(b).stdout == "b\n"  # no longer queued: sent alone


def test_an_agent_without_the_batch_feature_never_gets_a_batch() -> None:
    hello = json.dumps({"v": 1, "hello": {"version": "0.1.0", "facts": _facts()}}) + "\n"
    result = wire.encode_result(wire.ExecResult("a", wire.Status.OK)) + "\n"
    written = io.BytesIO()
    stream = AgentStream("old", written, io.BytesIO((hello + result).encode()))
    stream.receive_hello()
    a, b = bare("a", "true"), bare("b", "true")
    assert not stream.batches and not stream.pipeline([wire.BatchStep((a,)), wire.BatchStep((b,))])
    stream.execute(a)
    assert [json.loads(line)["id"] for line in written.getvalue().splitlines()] == ["a"]


# --- scripted replies: what no correct agent sends ------------------------------------------------


def scripted(*replies: dict[str, Any]) -> tuple[AgentStream, io.BytesIO]:
    written = io.BytesIO()
    stream = AgentStream("h1", written, io.BytesIO("".join(json.dumps(r) + "\n" for r in replies).encode()))
    stream.batches = True
    return stream, written


def result(request_id: str, status: str = "ok") -> dict[str, Any]:
    return {"v": 1, "id": request_id, "status": status}


def end(ran: int, error: str | None = None) -> dict[str, Any]:
    return {"v": 1, "batch_end": {"ran": ran, **({"error": error} if error else {})}}


A, B = bare("a", "false"), bare("b", "true")
STEPS = [wire.BatchStep((A,)), wire.BatchStep((B,))]


def test_an_agent_that_runs_past_a_failure_it_had_to_stop_at_is_given_up() -> None:
    stream, _ = scripted(result("a", "failed"), result("b"))
    stream.pipeline(STEPS)
    with pytest.raises(HostUnreachable, match="ran past the end of a batch"):
        stream.execute(A)


def test_an_answer_out_of_order_is_given_up() -> None:
    stream, _ = scripted(result("b"))
    stream.pipeline(STEPS)
    with pytest.raises(HostUnreachable, match="answered 'b' in a batch where 'a' was next"):
        stream.execute(A)


@pytest.mark.parametrize("replies, why", [
    ((result("a"), end(2)), "reported 2 result"),
    ((end(0, "bad batch: nope"),), "bad batch: nope"),
    ((result("a"), end(1), end(0)), "reported 0 result"),
], ids=["miscounted", "refused", "ran none of the rest"])
def test_an_end_that_does_not_add_up_is_given_up(replies: tuple[dict[str, Any], ...], why: str) -> None:
    stream, _ = scripted(*replies)
    stream.pipeline([wire.BatchStep((A,), continue_on_failure=True), wire.BatchStep((B,))])
    with pytest.raises(HostUnreachable, match=why):
        stream.execute(A)
        stream.execute(B)


def test_an_early_end_the_controller_did_not_expect_sends_the_rest_again() -> None:
    stream, written = scripted(result("a"), end(1), result("b"), end(1))
    stream.pipeline([wire.BatchStep((A,), continue_on_failure=True), wire.BatchStep((B,))])
    assert stream.execute(A).status is wire.Status.OK and stream.execute(B).status is wire.Status.OK
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    assert [[r["id"] for s in line["batch"] for r in s["requests"]] for line in lines] == [["a", "b"], ["b"]]


def _facts() -> dict[str, Any]:
    from sandfleet_agent.binding.facts import probe

    return probe(("/",)).to_dict()
