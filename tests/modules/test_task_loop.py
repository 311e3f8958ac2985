"""The one loop that watches a task to its end (modules/sandfleet_agent/spawn.py ``Runner``), shown
the same on every path a task can take: bare (with a pidfd announcing the exit, and polled as on
a kernel without one), a fresh bwrap, a persistent bwrap sandbox (its init spawns the task) and
Landlock (as the unprivileged test user). Exit codes have their own file (test_exit_codes.py).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn, Optional

import pytest

from sandfleet_agent import spawn
from sandfleet_agent.binding.facts import HostFacts, cap_eff, own_paths, probe, state_dir
from sandfleet_agent.executor import execute
from sandfleet_agent.linux.sandbox_pool import SandboxPool
from sandfleet_agent.portable.intent import PROFILES, NetworkPolicy, SandboxIntent
from sandfleet_agent.portable.policy import DEFAULT, Effective
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status
from support.ci import need
from support.unprivileged import as_user, user_tree

PATHS = ("bare", "bare-polled", "bwrap", "bwrap-reused", "landlock")
BARE_OK = Effective((dataclasses.replace(DEFAULT, unsandboxed=True),))
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"


@pytest.fixture(scope="module")
def host_facts() -> HostFacts:
    return probe()


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, host_facts: HostFacts, monkeypatch: pytest.MonkeyPatch) -> str:
    name = str(request.param)
    if name == "landlock":
        need(host_facts.landlock_abi > 0, "Landlock unavailable")
    elif name.startswith("bwrap"):
        status = host_facts.backend("bwrap")
        need(status is not None and status.available, f"bwrap unavailable: {status.reason if status else ''}")
    elif name == "bare-polled":
        monkeypatch.setattr(spawn, "_pidfd", lambda pid: -1)
    return name


@pytest.fixture
def ws() -> Iterator[Path]:
    """A workspace the test user may write (Landlock runs as that user)."""
    with user_tree() as root:
        (root / "ws").mkdir()
        os.chmod(root / "ws", 0o777)
        yield root / "ws"


def _as_agent_user(request: ExecRequest, facts: HostFacts) -> ExecResult:
    home = os.environ["HOME"]
    mine = dataclasses.replace(facts, home=home, euid=os.geteuid(), cap_eff=cap_eff(), state_dir=state_dir(home),
                               protected=own_paths())
    return execute(request, mine, pin="landlock")


def run(path: str, facts: HostFacts, ws: Path, script: str, timeout_s: float = 60,
        cancel_fd: Optional[int] = None) -> ExecResult:
    """``sh -c script`` on ``path``; in a persistent sandbox, as its second task."""
    facts = dataclasses.replace(facts, workspace_roots=(str(ws),))
    bare = path.startswith("bare")
    request = ExecRequest(id="t", argv=("/bin/sh", "-c", script), env=ENV, timeout_s=timeout_s,
                          sandbox=None if bare else SandboxIntent(PROFILES["workspace"], NetworkPolicy()),
                          policy=BARE_OK if bare else Effective())
    if path == "landlock":
        assert cancel_fd is None, "the cancel descriptor does not reach the test user's process"
        return as_user(_as_agent_user, request, facts)
    pool = SandboxPool(fresh_first=0) if path == "bwrap-reused" else None
    try:
        if pool is not None:
            warm = execute(dataclasses.replace(request, argv=("true",)), facts, pin="bwrap", pool=pool)
            assert warm.status is Status.OK, warm
        result = execute(request, facts, pin=None if bare else "bwrap", cancel_fd=cancel_fd, pool=pool)
    finally:
        if pool is not None:
            pool.close()
    assert ("--as-pid-1" in result.wrapper) == (pool is not None), result
    return result


def test_output_is_kept_to_its_last_mebibyte_with_a_flag(path: str, host_facts: HostFacts, ws: Path) -> None:
    r = run(path, host_facts, ws, f"{PY} -c \"import sys; sys.stdout.write('x' * (1 << 20) + 'end')\"; echo e >&2")
    assert (r.status, r.rc, r.stderr, r.stderr_truncated) == (Status.OK, 0, "e\n", False), r.message
    assert r.stdout_truncated and len(r.stdout) == spawn.DEFAULT_CAP and r.stdout.endswith("xend")


@pytest.mark.parametrize("script", ["sleep 30", "exec >&- 2>&-; sleep 30"], ids=["running", "closed-its-output"])
def test_a_timeout_kills_the_task_and_gives_no_exit_code(path: str, host_facts: HostFacts, ws: Path,
                                                         script: str) -> None:
    """Also for a task that closed its stdout and stderr: the exit, not the pipes, ends the watch."""
    r = run(path, host_facts, ws, script, timeout_s=0.5)
    assert (r.status, r.rc) == (Status.TIMEOUT, None), r
    assert r.duration_ms < 10_000, r


@pytest.mark.parametrize("path", [p for p in PATHS if p != "landlock"], indirect=True)
@pytest.mark.parametrize("script", ["sleep 30", "exec >&- 2>&-; sleep 30"], ids=["running", "closed-its-output"])
def test_anything_on_the_cancel_descriptor_kills_the_task(path: str, host_facts: HostFacts, ws: Path,
                                                         script: str) -> None:
    read_end, write_end = os.pipe()
    controller = threading.Timer(0.3, os.write, (write_end, b"x"))
    controller.start()
    try:
        r = run(path, host_facts, ws, script, cancel_fd=read_end)
    finally:
        controller.cancel()
        controller.join()
        os.close(read_end)
        os.close(write_end)
    assert r.status is Status.ERROR and "cancelled" in (r.message or ""), r
    assert r.duration_ms < 10_000, r


@pytest.mark.parametrize("path", ["bare", "bare-polled"], indirect=True)
def test_a_writer_that_left_the_task_holds_its_result_for_the_grace_only(path: str, host_facts: HostFacts,
                                                                         ws: Path) -> None:
    """A process that left the task's group (a bare task's ``setsid``; a sandbox's pid namespace
    leaves none) keeps stdout open: the result comes ``GRACE_S`` after the task's exit, with the
    task's own exit code, though the deadline passed during that grace."""
    r = run(path, host_facts, ws, "setsid sleep 3 & sleep 0.2; echo done", timeout_s=1.0)
    assert (r.status, r.rc, r.stdout) == (Status.OK, 0, "done\n"), r
    assert r.duration_ms < 2_900, r


class Unkillable(spawn.Runner):
    """A task whose kill never lands: its pipes stay open and no exit ever comes."""

    kill_timeout_s = 0.3

    def __init__(self) -> None:
        self.kills = 0
        self.fds: list[int] = []

    def start(self) -> tuple[int, int]:
        for _ in "oe":
            self.fds += os.pipe()
        return self.fds[0], self.fds[2]

    def kill(self) -> None:
        self.kills += 1

    def exit_fd(self) -> Optional[int]:
        return None

    def exit_status(self) -> Optional[int]:
        return None

    def unresponsive(self) -> NoReturn:
        raise TimeoutError(f"no exit after {self.kills} kill")

    def stop(self) -> None:
        for fd in self.fds:
            os.close(fd)


def test_a_killed_task_that_never_reports_its_exit_is_given_up_once_the_kill_times_out() -> None:
    task = Unkillable()
    with pytest.raises(TimeoutError, match="no exit after 1 kill"):
        task.run(timeout_s=0.1, cancel_fd=None, cap=spawn.DEFAULT_CAP)
    assert task.kills == 1


class TestSpawnedWaitFor:
    """A persistent sandbox's process is waited for at the agent's end with a timeout."""

    def test_an_exit_within_the_timeout_gives_its_status(self) -> None:
        child = spawn.Spawned(os.posix_spawn("/bin/sh", ["sh", "-c", "sleep 0.05; exit 3"], dict(os.environ)))
        assert child.wait_for(10) == 3 and child.poll() == 3

    def test_one_still_running_gives_none_after_the_timeout_and_stays_waitable(self) -> None:
        child = spawn.Spawned(os.posix_spawn("/bin/sleep", ["sleep", "10"], dict(os.environ)))
        try:
            started = time.monotonic()
            assert child.wait_for(0.2) is None
            assert 0.15 <= time.monotonic() - started < 5
        finally:
            os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL

    def test_one_already_reaped_is_answered_from_its_status(self) -> None:
        child = spawn.Spawned(os.posix_spawn("/bin/true", ["true"], dict(os.environ)))
        assert child.wait() == 0 and child.wait_for(0) == 0
