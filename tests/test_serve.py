"""``sandfleet serve`` end to end: JSON-RPC 2.0 over a real server process's stdin and stdout, local
agents, real bubblewrap sandboxes. The caller is hostile: every malformed or overreaching request
must come back as an error or a refused result, never a crash, never a line that is not JSON."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pytest

from support.ci import need
from support.sshd import descendants, processes_with_env

ROOT = Path(__file__).resolve().parent.parent
#: Host a finishes at once; host b waits for the test to create ``gate`` in the workspace, so a
#: notification that arrives while b still runs proves results stream as they come.
INVENTORY = """\
all:
  vars:
    ansible_connection: local
    sandfleet_workspace_roots: ["{ws}"]
  hosts:
    a: {{script: "echo from a"}}
    b: {{script: "while [ ! -e gate ]; do sleep 0.02; done; echo from b"}}
"""


class Server:
    """One ``python -m sandfleet serve`` process and what it wrote, line by line."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        self.ws = tmp / "ws"
        self.ws.mkdir(exist_ok=True)
        inventory = tmp / "inventory.yml"
        inventory.write_text(INVENTORY.format(ws=self.ws))
        self.proc = subprocess.Popen([sys.executable, "-m", "sandfleet", "serve", "-i", str(inventory), *extra],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=tmp)
        self.lines: queue.Queue[Optional[bytes]] = queue.Queue()
        self.raw: list[bytes] = []
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message: Union[dict[str, Any], bytes]) -> None:
        assert self.proc.stdin is not None
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def call(self, method: str, params: Optional[dict[str, Any]] = None, rid: Any = None) -> dict[str, Any]:
        """Send a request; its response (notifications before it are kept in :attr:`notes`)."""
        rid = self.new_id() if rid is None else rid
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.response(rid)

    def new_id(self) -> int:
        self._next += 1
        return self._next

    def next(self, timeout: float = 20) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        assert line is not None, f"the server ended: {self.stderr()}"
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0", message
        return message  # type: ignore[no-any-return]

    def response(self, rid: Any, timeout: float = 20, notes: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
        """The next response with id ``rid``; the notifications met on the way go to ``notes``."""
        while True:
            message = self.next(timeout)
            if "method" in message:
                assert message["method"] == "result", message
                if notes is not None:
                    notes.append(message)
                continue
            assert message["id"] == rid, f"expected the answer to {rid!r}, got {message}"
            return message

    def answers(self, *ids: Any) -> dict[Any, dict[str, Any]]:
        """The responses to ``ids``, in whatever order they come (notifications skipped)."""
        found: dict[Any, dict[str, Any]] = {}
        while len(found) < len(ids):
            message = self.next()
            if "method" not in message:
                assert message["id"] in ids, message
                found[message["id"]] = message
        return found

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def close_input(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):  # stdin, when the server had gone: the last flush fails
                    pipe.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    s.stop()


def run(argv: list[str], **params: Any) -> dict[str, Any]:
    return {"argv": argv, **params}


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie nobody reaped yet counts as gone)."""
    found = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(pid)
    return found


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- running -----------------------------------------------------------------------------------


def test_a_run_streams_each_hosts_result_as_it_arrives(server: Server) -> None:
    hosts = server.call("hosts")
    assert hosts["result"] == {"hosts": [{"name": "a", "os": None}, {"name": "b", "os": None}]}

    rid = "first run"
    server.send({"jsonrpc": "2.0", "id": rid, "method": "run",
                 "params": run(["sh", "-c", "{{ script }}"], cwd=":workspace_roots", timeout=20, name="gated")})
    first = server.next()  # a's result, while b still waits for the gate: nothing else can come
    assert first["method"] == "result" and first["params"]["id"] == rid
    assert first["params"]["result"]["host"] == "a"
    assert first["params"]["result"]["stdout"] == "from a\n"
    (server.ws / "gate").touch()
    notes: list[dict[str, Any]] = []
    answer = server.response(rid, notes=notes)
    assert [n["params"]["result"]["host"] for n in notes] == ["b"]
    result = answer["result"]
    assert result["exit_code"] == 0 and result["ok"] is True and result["aborted"] is None
    assert [(h["host"], h["ok"], h["unreachable"]) for h in result["hosts"]] == [("a", True, None), ("b", True, None)]
    records = {h["host"]: h["tasks"][0] for h in result["hosts"]}
    assert records["a"] == first["params"]["result"]  # the notification is the record the answer holds
    assert records["b"] == notes[0]["params"]["result"]
    for record in records.values():
        assert record["event"] == "task_result" and record["task"] == "gated"
        assert record["status"] == "ok" and record["backend"] == "bwrap"
        assert record["request"]["argv"][:2] == ["sh", "-c"]

    # The fleet stays open: the same agents serve the next command, and the hosts know their OS now.
    again = server.call("run", run(["echo", "{{ inventory_hostname }}"], hosts="b"))
    assert [h["tasks"][0]["stdout"] for h in again["result"]["hosts"]] == ["b\n"]
    assert server.call("hosts", {"hosts": "a"})["result"] == {"hosts": [{"name": "a", "os": "linux"}]}


def test_what_the_policy_refuses_is_a_denied_result_not_an_error(server: Server) -> None:
    for sandbox in ({"filesystem": {"/": "write"}}, {"network": "full"}, False):
        answer = server.call("run", run(["touch", "/etc/sandfleet-serve-was-here"], sandbox=sandbox))
        assert "error" not in answer, answer
        result = answer["result"]
        assert result["exit_code"] == 16 and result["ok"] is False
        assert [h["tasks"][0]["status"] for h in result["hosts"]] == ["denied", "denied"]
        assert all("denied by the policy" in h["tasks"][0]["message"] for h in result["hosts"])
    assert not os.path.exists("/etc/sandfleet-serve-was-here")


def test_the_operator_limit_bounds_every_pattern(tmp_path: Path) -> None:
    server = Server(tmp_path, "-l", "a")
    try:
        assert server.call("hosts", {"hosts": "all"})["result"] == {"hosts": [{"name": "a", "os": None}]}
        assert server.call("hosts", {"hosts": "b"})["result"] == {"hosts": []}
        for pattern in ("b", "all:!a", "~b", "b:&all"):
            error = server.call("run", run(["true"], hosts=pattern))["error"]
            assert error["code"] == -32602 and error["data"]["param"] == "hosts", error
        answer = server.call("run", run(["true"], hosts="a,b"))
        assert [h["host"] for h in answer["result"]["hosts"]] == ["a"]
    finally:
        server.stop()


# --- cancel and close --------------------------------------------------------------------------


def test_cancel_kills_the_running_process_groups_and_the_fleet_goes_on(server: Server) -> None:
    mark = uuid.uuid4().hex
    script = "sleep 60 & echo started > started-{{ inventory_hostname }}; wait"
    server.send({"jsonrpc": "2.0", "id": "slow", "method": "run",
                 "params": run(["sh", "-c", script], cwd=":workspace_roots", env={"SERVE_TEST_MARK": mark})})
    assert wait_for(lambda: all((server.ws / f"started-{h}").exists() for h in "ab"))
    pids = processes_with_env("SERVE_TEST_MARK", mark)
    assert len(alive(pids)) >= 4, pids  # a shell and its sleep on each host, at least

    # While it runs, requests are still answered; its id cannot be taken by another run.
    assert server.call("hosts")["result"]["hosts"][0]["name"] == "a"
    duplicate = server.call("run", run(["true"]), rid="slow")
    assert duplicate["error"]["code"] == -32600 and "already used" in duplicate["error"]["message"]
    # A run waiting behind it can be cancelled before it starts.
    server.send({"jsonrpc": "2.0", "id": "queued", "method": "run", "params": run(["touch", "never-ran"],
                                                                                  cwd=":workspace_roots")})
    server.send({"jsonrpc": "2.0", "id": "c0", "method": "cancel", "params": {"id": "queued"}})
    answers = server.answers("c0", "queued")
    assert answers["c0"]["result"] == {"cancelled": True}
    assert answers["queued"]["error"] == {"code": -32800, "message": "run cancelled before it started"}

    server.send({"jsonrpc": "2.0", "id": "c1", "method": "cancel", "params": {"id": "slow"}})
    answers = server.answers("c1", "slow")
    assert answers["c1"]["result"] == {"cancelled": True}
    error = answers["slow"]["error"]
    assert error["code"] == -32800
    assert error["data"]["aborted"].endswith("cancelled; the running commands were killed")
    assert wait_for(lambda: not alive(pids), timeout=10), f"still running: {alive(pids)}"
    assert not (server.ws / "never-ran").exists()

    assert server.call("cancel", {"id": "slow"})["result"] == {"cancelled": False}  # nothing left to cancel
    after = server.call("run", run(["echo", "still here"]))  # each host starts a new agent
    assert after["result"]["exit_code"] == 0
    assert [h["tasks"][0]["stdout"] for h in after["result"]["hosts"]] == ["still here\n"] * 2


def test_end_of_input_kills_what_runs_closes_every_agent_and_exits(server: Server) -> None:
    assert server.call("run", run(["true"]))["result"]["exit_code"] == 0
    agents = descendants(server.proc.pid)
    assert len(agents) >= 2, agents  # one agent per host (and their persistent sandboxes)
    mark = uuid.uuid4().hex
    server.send({"jsonrpc": "2.0", "id": 7, "method": "run",
                 "params": run(["sh", "-c", "echo up > up-{{ inventory_hostname }}; exec sleep 60"],
                               cwd=":workspace_roots", env={"SERVE_TEST_MARK": mark})})
    assert wait_for(lambda: all((server.ws / f"up-{h}").exists() for h in "ab"))
    tasks = processes_with_env("SERVE_TEST_MARK", mark)
    assert alive(tasks)
    started = time.monotonic()
    assert server.close_input() == 0
    assert time.monotonic() - started < 10
    assert wait_for(lambda: alive(agents + tasks) == [], timeout=5), f"left running: {alive(agents + tasks)}"
    assert "Traceback" not in server.stderr()


def test_close_answers_then_exits(server: Server) -> None:
    server.call("run", run(["true"]))
    agents = descendants(server.proc.pid)
    assert server.call("close", {}, rid="bye")["result"] == {"closed": True}
    assert server.proc.wait(timeout=20) == 0
    assert wait_for(lambda: alive(agents) == [], timeout=5), f"left running: {alive(agents)}"


def test_a_bad_inventory_is_exit_65_with_nothing_on_stdout(tmp_path: Path) -> None:
    (tmp_path / "inv.yml").write_text("all:\n  hosts:\n    a: {sandfleet_os: plan9}\n")
    proc = subprocess.run([sys.executable, "-m", "sandfleet", "serve", "-i", str(tmp_path / "inv.yml")],
                          input=b"", capture_output=True, timeout=60)
    assert proc.returncode == 65, proc.stderr
    assert proc.stdout == b"" and b"sandfleet_os" in proc.stderr


# --- hostile requests: one server takes them all, in turn ----------------------------------------

Expect = tuple[str, Any]  # ("error", code) | ("status", the status on every host)


def _line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _request(params: Any, method: str = "run", rid: Any = 1, **members: Any) -> bytes:
    return _line({"jsonrpc": "2.0", "id": rid, "method": method, "params": params, **members})


def _nested(depth: int) -> Any:
    value: Any = "read"
    for _ in range(depth):
        value = {"x": value}
    return value


HOSTILE: dict[str, tuple[bytes, Expect]] = {
    # not JSON
    "garbage": (b"{this is not json\n", ("error", -32700)),
    "not utf-8": (b'{"jsonrpc": "2.0", "id": 1, "method": "hosts", "params": {"hosts": "\xff\xfe"}}\n',
                  ("error", -32700)),
    "NaN": (b'{"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"argv": ["true"], "timeout": NaN}}\n',
            ("error", -32700)),
    "number out of range": (b'{"jsonrpc": "2.0", "id": 1e999, "method": "hosts"}\n', ("error", -32700)),
    "duplicate key": (b'{"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"argv": ["true"], '
                      b'"argv": ["false"]}}\n', ("error", -32700)),
    "nested past the parser": (b"[" * 200_000 + b"]" * 200_000 + b"\n", ("error", -32700)),
    "a line over 4 MiB": (b'{"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"argv": ["' + b"x" * (4 << 20)
                          + b'"]}}\n', ("error", -32600)),
    # not a request
    "a batch": (_line([{"jsonrpc": "2.0", "id": 1, "method": "hosts"}]), ("error", -32600)),
    "a number": (b"42\n", ("error", -32600)),
    "no jsonrpc": (_line({"id": 1, "method": "hosts"}), ("error", -32600)),
    "jsonrpc 1.0": (_line({"jsonrpc": "1.0", "id": 1, "method": "hosts"}), ("error", -32600)),
    "id an object": (_line({"jsonrpc": "2.0", "id": {"$gt": ""}, "method": "hosts"}), ("error", -32600)),
    "id an array": (_line({"jsonrpc": "2.0", "id": [1], "method": "hosts"}), ("error", -32600)),
    "id a boolean": (_line({"jsonrpc": "2.0", "id": True, "method": "hosts"}), ("error", -32600)),
    "method a number": (_line({"jsonrpc": "2.0", "id": 1, "method": 5}), ("error", -32600)),
    "an unknown member": (_request({"argv": ["true"]}, policy={"unsandboxed": True}), ("error", -32600)),
    "params a string": (_request("argv=true"), ("error", -32600)),
    "nested 40 deep": (_request({"argv": ["true"], "sandbox": {"filesystem": _nested(40)}}), ("error", -32600)),
    "70,000 argv words": (_request({"argv": ["echo", *["x"] * 70_000]}), ("error", -32600)),
    "run without an id": (_line({"jsonrpc": "2.0", "method": "run", "params": {"argv": ["true"]}}),
                          ("error", -32600)),
    "run with id null": (_request({"argv": ["true"]}, rid=None), ("error", -32600)),
    # unknown method
    "unknown method": (_request({}, method="shell"), ("error", -32601)),
    "a private method": (_request({}, method="_execute"), ("error", -32601)),
    # bad params, and everything only the operator may decide
    "positional params": (_request([["true"]]), ("error", -32602)),
    "argv one string": (_request({"argv": "rm -rf /"}), ("error", -32602)),
    "argv empty": (_request({"argv": []}), ("error", -32602)),
    "argv a number": (_request({"argv": ["sleep", 1]}), ("error", -32602)),
    "argv an object": (_request({"argv": ["echo", {"x": 1}]}), ("error", -32602)),
    "argv with NUL": (_request({"argv": ["echo", "a\x00b"]}), ("error", -32602)),
    "argv a lone surrogate": (b'{"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"argv": ["echo", '
                              b'"\\ud800"]}}\n', ("error", -32602)),
    "argv a broken template": (_request({"argv": ["echo", "{{ x"]}), ("error", -32602)),
    "policy param": (_request({"argv": ["true"], "policy": {"filesystem": {"/": "write"}}}), ("error", -32602)),
    "consent param": (_request({"argv": ["true"], "sandbox": False, "allow_unsandboxed": True}), ("error", -32602)),
    "extra vars param": (_request({"argv": ["true"], "extra_vars": {"x": 1}}), ("error", -32602)),
    "vars param": (_request({"argv": ["true"], "vars": {"x": 1}}), ("error", -32602)),
    "inventory param": (_request({"argv": ["true"], "inventory": "/etc/passwd"}), ("error", -32602)),
    "limit param": (_request({"argv": ["true"], "limit": "all"}), ("error", -32602)),
    "host key policy param": (_request({"argv": ["true"], "host_key_policy": "accept-new"}), ("error", -32602)),
    "a policy inside the sandbox": (_request({"argv": ["true"], "sandbox": {"policy": {"unsandboxed": True}}}),
                                    ("error", -32602)),
    "sandbox a string": (_request({"argv": ["true"], "sandbox": "off"}), ("error", -32602)),
    "sandbox access unknown": (_request({"argv": ["true"], "sandbox": {"filesystem": {"/": "own"}}}),
                               ("error", -32602)),
    "env a number": (_request({"argv": ["true"], "env": {"N": 1}}), ("error", -32602)),
    "env name with =": (_request({"argv": ["true"], "env": {"A=B": "1"}}), ("error", -32602)),
    "cwd relative": (_request({"argv": ["true"], "cwd": "../.."}), ("error", -32602)),
    "timeout a string": (_request({"argv": ["true"], "timeout": "5"}), ("error", -32602)),
    "timeout negative": (_request({"argv": ["true"], "timeout": -1}), ("error", -32602)),
    "timeout a boolean": (_request({"argv": ["true"], "timeout": True}), ("error", -32602)),
    "timeout a huge integer": (_request({"argv": ["true"], "timeout": 10 ** 400}), ("error", -32602)),
    "name a number": (_request({"argv": ["true"], "name": 5}), ("error", -32602)),
    "hosts empty": (_request({"argv": ["true"], "hosts": ""}), ("error", -32602)),
    "hosts unknown": (_request({"argv": ["true"], "hosts": "db*"}), ("error", -32602)),
    "hosts a broken pattern": (_request({"argv": ["true"], "hosts": "a[0"}), ("error", -32602)),
    "hosts a list": (_request({"argv": ["true"], "hosts": ["a"]}), ("error", -32602)),
    "hosts the implicit localhost": (_request({"argv": ["true"], "hosts": "localhost"}), ("error", -32602)),
    "cancel an object id": (_request({"id": {"x": 1}}, method="cancel"), ("error", -32602)),
    "close with params": (_request({"now": True}, method="close"), ("error", -32602)),
    # accepted, then bounded by the policy where the host or the controller checks it
    "sandbox / write": (_request({"argv": ["touch", "/sandfleet-serve"], "sandbox": {"filesystem": {"/": "write"}}}),
                        ("status", "denied")),
    "sandbox roots at /": (_request({"argv": ["touch", "/sandfleet-serve"], "sandbox": {"workspace_roots": ["/"]}}),
                           ("status", "denied")),
    "sandbox full access": (_request({"argv": ["true"], "sandbox": {"profile": "full-access"}}), ("status", "denied")),
    "unsandboxed without consent": (_request({"argv": ["true"], "sandbox": False}), ("status", "denied")),
    "argv over value_bytes": (_request({"argv": ["echo", "x" * 200_000]}), ("status", "error")),
    "argv over argv_bytes": (_request({"argv": ["echo", *["xx"] * 50_000]}), ("status", "error")),
    "a template reaching for the inventory": (_request({"argv": ["echo", "{{ hostvars }}"]}), ("status", "error")),
}


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("hostile"))
    yield s
    s.stop()


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_request_fails_safely(hostile_server: Server, case: str) -> None:
    line, (kind, expected) = HOSTILE[case]
    hostile_server.send(line)
    message = hostile_server.next(timeout=30)
    while "method" in message:  # a run's notifications come before its answer
        assert kind == "status" and message["params"]["result"]["status"] == expected, message
        message = hostile_server.next(timeout=30)
    if kind == "error":
        assert "error" in message, message
        assert message["error"]["code"] == expected, message
        assert isinstance(message["error"]["message"], str) and "\n" not in message["error"]["message"]
        if expected == -32602 and "data" in message["error"]:
            assert isinstance(message["error"]["data"].get("allowed", []), list)
    else:
        assert "result" in message, message
        assert [h["tasks"][0]["status"] for h in message["result"]["hosts"]] == [expected, expected]
    assert not os.path.exists("/sandfleet-serve")


def test_after_every_hostile_request_the_server_still_answers(hostile_server: Server) -> None:
    hostile_server.send(b"\n   \n")  # blank lines are skipped without an answer
    assert hostile_server.call("hosts", rid="alive")["result"]["hosts"][0]["name"] == "a"
    answer = hostile_server.call("run", run(["echo", "ok"]), rid="still runs")
    assert answer["result"]["exit_code"] == 0
    assert hostile_server.close_input() == 0
    assert all(json.loads(line)["jsonrpc"] == "2.0" for line in hostile_server.raw)  # nothing but JSON-RPC
    assert b"Traceback" not in b"".join(hostile_server.raw)
    assert "Traceback" not in hostile_server.stderr()


def test_the_loader_errors_carry_its_message_and_what_is_allowed(server: Server) -> None:
    error = server.call("run", run(["true"], sandbox={"filesystem": {"/": "own"}}))["error"]
    assert error["code"] == -32602
    assert "own" in error["data"]["message"] and "write" in error["data"]["allowed"]
    error = server.call("run", run(["true"], bogus=1))["error"]
    assert error["data"] == {"param": "bogus", "message": "unknown param",
                             "allowed": ["argv", "hosts", "sandbox", "cwd", "env", "timeout", "name"]}
    error = server.call("nope")["error"]
    assert error == {"code": -32601, "message": "unknown method 'nope'",
                     "data": {"allowed": ["hosts", "run", "cancel", "close"]}}
