"""The scheduler and host loop above the transport, with a fake connection (docs/architecture.md §8 allows it here)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from sandfleet.inventory import load_inventory
from sandfleet.load.playbook import load_playbook
from sandfleet.run import hostloop
from sandfleet.run.scheduler import run_playbook
from sandfleet.transports.base import AgentInit, Connection, HostUnreachable
from sandfleet_agent.binding.facts import assumed_facts
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status


class FakeConnection(Connection):
    """Answers every task ok, except on hosts told to hang (until closed) or to be unreachable."""

    def __init__(self, host: str, hang: bool = False, down: bool = False) -> None:
        self.host, self.hang, self.down = host, hang, down
        self.closed = threading.Event()

    def start(self, init: AgentInit) -> Any:
        if self.down:
            raise HostUnreachable(f"{self.host}: connection refused")
        return assumed_facts("linux")

    def execute(self, request: ExecRequest) -> ExecResult:
        if self.hang:
            self.closed.wait(30)
            raise HostUnreachable(f"lost {self.host}")
        return ExecResult(id=request.id, status=Status.OK, rc=0, backend="bwrap")

    def close(self) -> None:
        self.closed.set()


class Events(hostloop.Reporter):
    def __init__(self) -> None:
        self.results: list[tuple[str, str]] = []
        self.unreachable: dict[str, str] = {}
        self.lock = threading.Lock()

    def task_event(self, event: hostloop.TaskEvent) -> None:
        with self.lock:
            self.results.append((event.host, event.status))

    def host_unreachable(self, host: str, message: str) -> None:
        self.unreachable[host] = message


def setup(tmp_path: Path, tasks: str) -> tuple[Any, Any]:
    inv = tmp_path / "inv.ini"
    inv.write_text("[all]\n" + "\n".join(f"h{i} sandfleet_os=linux" for i in range(4)) + "\n")
    pb = tmp_path / "pb.yml"
    pb.write_text("- hosts: all\n  tasks:\n" + tasks)
    return load_playbook(str(pb)), load_inventory([str(inv)])


def test_a_host_that_stops_answering_is_given_up_by_the_watchdog(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostloop, "WATCHDOG_GRACE_S", 0.2)
    playbook, inventory = setup(tmp_path, "    - exec: {argv: ['true'], timeout: 0.1}\n")
    events = Events()
    run_playbook(playbook, inventory, events, lambda c: FakeConnection(c.name, hang=c.name == "h1"), forks=4)
    assert "did not answer within 0.1 s + 0.2 s grace" in events.unreachable["h1"]
    assert sorted(events.results) == [("h0", "ok"), ("h2", "ok"), ("h3", "ok")]


def test_unreachable_and_failing_hosts_never_stop_the_others(tmp_path: Path) -> None:
    playbook, inventory = setup(tmp_path, "    - exec: {argv: ['true']}\n    - exec: {argv: ['true']}\n")
    events = Events()
    runs = run_playbook(playbook, inventory, events, lambda c: FakeConnection(c.name, down=c.name == "h2"), forks=2)
    assert set(events.unreachable) == {"h2"} and runs["h2"].done
    assert sorted(events.results) == sorted((h, "ok") for h in ("h0", "h1", "h3") for _ in range(2))
