"""The agent's protocol: init, hello with facts, one result per request, errors that never kill it."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from sandfleet_agent import agent, spawn
from sandfleet_agent.portable import wire
from sandfleet_agent.portable.policy import Effective
from support.policies import WIDE


def converse(*lines: str) -> list[dict[str, object]]:
    out = io.StringIO()
    agent.serve(io.StringIO("".join(line + "\n" for line in lines)), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


INIT = json.dumps({"v": 1, "init": {"workspace_roots": ["/"], "sandbox_pin": None}})


def test_hello_carries_probed_facts_and_the_given_roots() -> None:
    hello = converse(INIT)[0]["hello"]
    assert isinstance(hello, dict)
    facts = hello["facts"]
    assert facts["os"] == "linux" and facts["workspace_roots"] == ["/"]
    assert {b["name"] for b in facts["backends"]} == {"bwrap", "landlock"}


def test_each_request_gets_its_result_and_bad_lines_do_not_stop_the_agent() -> None:
    ok = wire.encode_request(wire.ExecRequest(policy=WIDE, id="a", argv=("echo", "hi"), sandbox=None))
    replies = converse(INIT, "{not json", json.dumps({"v": 1, "id": "b", "argv": "echo hi", "sandbox": None}), ok)
    results = [wire.decode_result(json.dumps(r)) for r in replies[1:]]
    assert [r.status for r in results] == [wire.Status.ERROR, wire.Status.ERROR, wire.Status.OK]
    assert results[1].id == "b" and "argv" in (results[1].message or "")
    assert results[2].stdout == "hi\n" and results[2].backend == "none"


def test_unknown_fields_from_a_newer_controller_are_ignored() -> None:
    line = json.dumps({"v": 1, "id": "n", "argv": ["true"], "sandbox": None, "future_field": {"x": 1},
                       "policy": WIDE.to_json()})
    assert converse(INIT, line)[1]["status"] == "ok"


def test_eof_during_a_task_kills_it() -> None:
    tag = f"agentcancel{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet_agent.agent"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(INIT + "\n")
    proc.stdin.flush()
    proc.stdout.readline()
    request = wire.ExecRequest(policy=WIDE, id="c", argv=("bash", "-c", f"exec -a {tag} sleep 300"), sandbox=None)
    proc.stdin.write(wire.encode_request(request) + "\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.stdin.close()
    result = wire.decode_result(proc.stdout.readline())
    assert proc.wait(timeout=10) == 0
    proc.stdout.close()
    assert result.status is wire.Status.ERROR and "cancelled" in (result.message or "")
    assert subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode == 1


def test_a_missing_working_directory_is_named() -> None:
    init = json.dumps({"v": 1, "init": {"workspace_roots": ["/nonexistent/ws"]}})
    line = wire.encode_request(wire.ExecRequest(policy=WIDE, id="m", argv=("true",), sandbox=None))
    result = converse(init, line)[1]
    assert result["status"] == "error" and "/nonexistent/ws does not exist" in str(result["message"])


def test_resolve_map_from_the_init_line_overrides_the_environment() -> None:
    line = json.dumps({"v": 1, "init": {"network_resolve": {"Mirror.Test.": "10.0.0.5", "b.test": "::1"}}})
    env = {agent.RESOLVE_ENV: json.dumps({"mirror.test": "10.9.9.9", "c.test": "127.0.0.7"})}
    assert agent.read_resolve(wire.decode_init(line), env) == {"mirror.test": "10.0.0.5", "b.test": "::1",
                                                                "c.test": "127.0.0.7"}
    assert agent.read_resolve(wire.decode_init(INIT), {}) == {}  # an older controller sends none


def test_a_bad_resolve_map_stops_the_agent_before_any_task() -> None:
    bad = json.dumps({"v": 1, "init": {"network_resolve": {"x.test": "not-an-ip"}}})
    replies = converse(bad, wire.encode_request(wire.ExecRequest(policy=WIDE, id="a", argv=("true",), sandbox=None)))
    assert replies == [{"v": 1, "error": "bad init line: network_resolve: 'x.test' maps to 'not-an-ip', "
                        "which is not an IPv4 or IPv6 address"}]


def test_start_times_are_iso_8601_utc_with_milliseconds() -> None:
    before = datetime.now(timezone.utc)
    stamp = spawn.utc_now()
    after = datetime.now(timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed <= after


def test_each_change_to_the_agents_environment_reaches_the_next_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """spawn.task_env keeps what tasks inherit of ``os.environ`` until its data changes: a
    variable set, changed (through ``os.environb`` too) or removed is seen by the next task, and
    what one task's environment gets never reaches another's."""
    def inherited() -> dict[str, str]:
        env = spawn.task_env({})
        assert list(env.items()) == list(spawn.task_env({}, dict(os.environ)).items())  # as from a plain copy
        return env

    monkeypatch.setenv("LC_SANDFLEET_TEST", "one")
    monkeypatch.setenv("SANDFLEET_TEST_SECRET", "kept out")
    first = inherited()
    assert first["LC_SANDFLEET_TEST"] == "one" and "SANDFLEET_TEST_SECRET" not in first
    first["LC_SANDFLEET_TEST"], first["LEAKED"] = "changed by a task", "x"
    assert inherited()["LC_SANDFLEET_TEST"] == "one" and "LEAKED" not in inherited()
    monkeypatch.setenv("LC_SANDFLEET_TEST", "two")
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert inherited()["LC_SANDFLEET_TEST"] == "two" and inherited()["LANG"] == "C.UTF-8"
    try:
        os.environb[b"LC_SANDFLEET_TEST"] = b"three\xff"
        assert inherited()["LC_SANDFLEET_TEST"] == "three\udcff"
    finally:
        os.environb[b"LC_SANDFLEET_TEST"] = b"two"
    monkeypatch.delenv("LC_SANDFLEET_TEST")
    monkeypatch.delenv("LANG")
    assert "LC_SANDFLEET_TEST" not in inherited() and "LANG" not in inherited()
    assert spawn.task_env({"LANG": "mine"}, passthrough=["SANDFLEET_TEST_SECRET"]) == {
        **inherited(), "SANDFLEET_TEST_SECRET": "kept out", "LANG": "mine"}


def test_a_changed_variable_reaches_the_next_task_of_the_same_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    request = wire.ExecRequest(policy=WIDE, id="e", argv=("sh", "-c", "echo $LC_SANDFLEET_TEST"), sandbox=None)
    for value in ("one", "two"):
        monkeypatch.setenv("LC_SANDFLEET_TEST", value)
        assert converse(INIT, wire.encode_request(request))[1]["stdout"] == f"{value}\n"


def test_each_result_carries_the_digest_of_its_own_policy() -> None:
    """The executor keeps the last policy's digest for the same layer objects only: alternating
    policies, equal ones in new objects, each result names the digest of the policy it ran under."""
    other = Effective(tuple(dataclasses.replace(layer, source="test: another source") for layer in WIDE.layers))
    policies = (WIDE, other, WIDE, other, Effective(WIDE.layers), wire.decode_request(wire.encode_request(
        wire.ExecRequest(policy=other, id="d", argv=("true",), sandbox=None))).policy)
    lines = [wire.encode_request(wire.ExecRequest(policy=p, id=f"d{i}", argv=("true",), sandbox=None))
             for i, p in enumerate(policies)]
    replies = converse(INIT, *lines)[1:]
    assert [r["policy_digest"] for r in replies] == [p.digest() for p in policies]
    assert replies[0]["policy_digest"] != replies[1]["policy_digest"]
