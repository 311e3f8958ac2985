"""One persistent bwrap sandbox serving many tasks (modules/sandfleet_agent/linux/sandbox_pool.py, sandbox_init.py).

What a reused sandbox must not carry from one task to the next, each shown with real bwrap:
processes (however they detach), environment, cwd, open fds, the sandbox-private /dev tmpfs and
/dev/shm, SysV IPC, and pid 1's limits; and what it must survive: a timeout, a task signalling
pid 1. The enforcement matrix runs through this path too (tests/modules/test_enforcement.py).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandfleet.transports.base import AgentInit
from sandfleet_agent.backends.base import Wrapper
from sandfleet_agent.binding.facts import HostFacts, probe
from sandfleet_agent.executor import execute
from sandfleet_agent.linux.sandbox_pool import LOADER, SandboxPool, persistent_wrapper, split_wrapper
from sandfleet_agent.portable.intent import PROFILES, NetworkMode, NetworkPolicy, SandboxIntent
from sandfleet_agent.portable.policy import DEFAULT_PROTECTED
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status, decode_init, encode_init
from support.ci import need
from support.policies import WIDE


@pytest.fixture(scope="module")
def host_facts() -> HostFacts:
    facts = probe()
    status = facts.backend("bwrap")
    need(status is not None and status.available, f"bwrap unavailable: {status.reason if status else ''}")
    return facts


@pytest.fixture
def facts(host_facts: HostFacts, tmp_path: Path) -> HostFacts:
    (tmp_path / "ws" / "sub").mkdir(parents=True)
    for name in DEFAULT_PROTECTED:  # else the first task's sandbox makes them, and the second renders anew
        (tmp_path / "ws" / name).mkdir()
    return dataclasses.replace(host_facts, workspace_roots=(str(tmp_path / "ws"),), tmpdir=str(tmp_path))


@pytest.fixture
def pool() -> Iterator[SandboxPool]:
    p = SandboxPool(fresh_first=0)  # the sandbox from the first task on: these tests are about its insides
    yield p
    p.close()


WORKSPACE = SandboxIntent(PROFILES["workspace"], NetworkPolicy(NetworkMode.NONE))


def run(pool: SandboxPool, facts: HostFacts, script: str, intent: SandboxIntent = WORKSPACE,
        **kw: object) -> ExecResult:
    request = ExecRequest(policy=WIDE, id="t", argv=("/bin/sh", "-c", script), sandbox=intent, **kw)  # type: ignore[arg-type]
    result = execute(request, facts, pin="bwrap", pool=pool)
    assert result.status is not Status.SANDBOX_UNAVAILABLE, result
    return result


def sandbox_id(pool: SandboxPool, facts: HostFacts, intent: SandboxIntent = WORKSPACE) -> str:
    """The pid namespace a task of ``intent`` runs in: the same one means the same sandbox."""
    r = run(pool, facts, "readlink /proc/self/ns/pid", intent)
    assert r.status is Status.OK and "--as-pid-1" in r.wrapper, r
    return r.stdout


def sandbox_run(pool: SandboxPool, facts: HostFacts, intent: SandboxIntent = WORKSPACE) -> ExecResult:
    """One task that prints its pid namespace, however the pool runs it."""
    result = execute(ExecRequest(policy=WIDE, id="t", argv=("readlink", "/proc/self/ns/pid"), sandbox=intent), facts,
                     pin="bwrap", pool=pool)
    assert result.status is Status.OK, result
    return result


def host_processes_with(marker: str) -> list[int]:
    needle = f"SANDFLEET_TEST_MARKER={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


class TestSharing:
    def test_tasks_with_one_policy_share_one_sandbox(self, pool: SandboxPool, facts: HostFacts) -> None:
        assert sandbox_id(pool, facts) == sandbox_id(pool, facts)

    def test_another_policy_gets_another_sandbox(self, pool: SandboxPool, facts: HostFacts) -> None:
        read_only = SandboxIntent(PROFILES["read-only"])
        assert sandbox_id(pool, facts) != sandbox_id(pool, facts, read_only)
        assert sandbox_id(pool, facts, read_only) == sandbox_id(pool, facts, read_only)

    def test_the_result_shows_the_persistent_sandbox(self, pool: SandboxPool, facts: HostFacts) -> None:
        r = run(pool, facts, "echo hi")
        assert r.status is Status.OK and r.stdout == "hi\n"
        assert r.wrapper[-5:] == ("-I", "-S", "-c", LOADER) or r.wrapper[-4:] == ("-I", "-S", "-c", LOADER)
        assert "--as-pid-1" in r.wrapper and "/bin/sh" not in r.wrapper

    def test_reuse_off_means_a_fresh_sandbox_per_task(self, facts: HostFacts) -> None:
        request = ExecRequest(policy=WIDE, id="t", argv=("readlink", "/proc/self/ns/pid"), sandbox=WORKSPACE)
        first, second = execute(request, facts, pin="bwrap"), execute(request, facts, pin="bwrap")
        assert first.status is Status.OK and second.status is Status.OK
        assert first.stdout != second.stdout and "--as-pid-1" not in first.wrapper
        assert first.wrapper[-2:] == ("readlink", "/proc/self/ns/pid")

    def test_a_policy_gets_its_persistent_sandbox_from_its_second_task(self, facts: HostFacts) -> None:
        """The agent's default pool: a policy used once never pays for a persistent sandbox's
        start; its second task starts one and later tasks share it."""
        pool = SandboxPool()
        try:
            first, second, third = (sandbox_run(pool, facts) for _ in range(3))
            other = sandbox_run(pool, facts, SandboxIntent(PROFILES["read-only"]))
        finally:
            pool.close()
        assert "--as-pid-1" not in first.wrapper and first.wrapper[-2:] == ("readlink", "/proc/self/ns/pid")
        assert "--as-pid-1" in second.wrapper and second.wrapper == third.wrapper
        assert second.stdout == third.stdout != first.stdout  # one pid namespace for the 2nd and 3rd
        assert "--as-pid-1" not in other.wrapper  # another policy counts its own tasks

    def test_the_init_line_carries_the_choice(self) -> None:
        assert decode_init(encode_init(AgentInit())).sandbox_reuse is True
        assert decode_init(encode_init(AgentInit(sandbox_reuse=False))).sandbox_reuse is False
        assert decode_init('{"v": 1, "init": {}}').sandbox_reuse is True  # an older controller: the default


class TestNoLeaks:
    def test_no_process_outlives_its_task(self, pool: SandboxPool, facts: HostFacts) -> None:
        marker = f"m{os.getpid()}"
        r = run(pool, facts, "sleep 300 & setsid sleep 300 & (setsid sh -c 'sleep 300 &') ; echo started",
                env={"SANDFLEET_TEST_MARKER": marker})
        assert r.status is Status.OK and r.stdout == "started\n"
        assert host_processes_with(marker) == []
        listing = run(pool, facts, "for p in /proc/[0-9]*; do echo \"${p#/proc/} $(cat $p/comm)\"; done")
        comms = sorted(line.split(" ", 1)[1] for line in listing.stdout.splitlines())
        assert "sleep" not in comms and len(comms) <= 4, listing.stdout  # init, sh, cat (and the subshell)

    def test_a_leftover_writer_does_not_hold_the_result(self, pool: SandboxPool, facts: HostFacts) -> None:
        r = run(pool, facts, "(sleep 300; echo late) & echo now")
        assert r.status is Status.OK and r.stdout == "now\n"

    def test_environment_is_the_tasks_own(self, pool: SandboxPool, facts: HostFacts,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SANDFLEET_AGENT_SECRET", "agent-only")
        fresh_pool = SandboxPool(fresh_first=0)  # started with the secret in the agent's environment
        try:
            first = run(fresh_pool, facts, "export LEAK=1; env", env={"TASK_ONE": "1"})
            second = run(fresh_pool, facts, "env", env={"TASK_TWO": "2"})
        finally:
            fresh_pool.close()
        assert "TASK_ONE=1" in first.stdout.splitlines()
        lines = second.stdout.splitlines()
        assert "TASK_TWO=2" in lines
        assert not [ln for ln in lines if ln.startswith(("TASK_ONE=", "LEAK=", "SANDFLEET_AGENT_SECRET="))]

    def test_cwd_and_fds_are_the_tasks_own(self, pool: SandboxPool, facts: HostFacts) -> None:
        ws = facts.workspace_roots[0]
        sub = run(pool, facts, "pwd; cd /; ls /proc/$$/fd", cwd=_cwd(f"{ws}/sub"))
        top = run(pool, facts, "pwd; ls /proc/$$/fd", cwd=_cwd(ws))
        assert sub.stdout == f"{ws}/sub\n0\n1\n2\n" and top.stdout == f"{ws}\n0\n1\n2\n", (sub, top)

    def test_dev_and_dev_shm_start_empty_for_every_task(self, pool: SandboxPool, facts: HostFacts) -> None:
        """bwrap's /dev is a tmpfs private to the sandbox, writable by its tasks; in a reused
        sandbox what one task leaves there must not reach the next (a fresh one starts empty)."""
        planted = run(pool, facts, "echo secret > /dev/shm/x && mkdir /dev/planted && echo secret > /dev/planted/f "
                                   "&& chmod 777 /dev/shm && echo done")
        assert planted.stdout == "done\n", planted
        after = run(pool, facts, "ls -A /dev/shm; ls /dev/planted; stat -c %a /dev/shm; cat /dev/null")
        assert "secret" not in after.stdout and after.stdout.splitlines()[-1] == "755", after
        assert "No such file" in after.stderr

    def test_dev_shm_files_are_removed_and_the_sandbox_kept(self, pool: SandboxPool, facts: HostFacts) -> None:
        before = sandbox_id(pool, facts)
        run(pool, facts, "echo secret > /dev/shm/x; mkdir /dev/shm/d; echo secret > /dev/shm/d/y")
        assert run(pool, facts, "ls -A /dev/shm").stdout == ""
        assert sandbox_id(pool, facts) == before

    def test_sysv_ipc_does_not_reach_the_next_task(self, pool: SandboxPool, facts: HostFacts) -> None:
        made = run(pool, facts, "ipcmk -M 4096 >/dev/null && ipcs -m | grep -c 4096")
        need(made.status is Status.OK, f"ipcmk/ipcs unavailable: {made.stderr}")
        assert made.stdout == "1\n"
        assert run(pool, facts, "ipcs -m | grep -c 4096 || true").stdout == "0\n"

    def test_limits_a_task_sets_on_pid_1_do_not_reach_the_next(self, pool: SandboxPool, facts: HostFacts) -> None:
        need(shutil.which("prlimit") is not None, "prlimit (util-linux) is needed")
        normal = run(pool, facts, "ulimit -n").stdout
        lowered = run(pool, facts, "prlimit --pid 1 --nofile=64:64 && echo lowered")
        assert lowered.status is Status.FAILED and "not permitted" in lowered.stderr  # the seccomp filter
        own = run(pool, facts, "prlimit --nofile=64:64 sh -c 'ulimit -n'")  # its own children: fine
        assert own.stdout == "64\n" and normal != "64\n"
        assert run(pool, facts, "ulimit -n").stdout == normal

    def test_pid_1_cannot_be_killed_or_read_by_a_task(self, pool: SandboxPool, facts: HostFacts) -> None:
        before = sandbox_id(pool, facts)
        r = run(pool, facts, "kill -KILL 1; kill -TERM 1; kill -INT 1; "
                             "cat /proc/1/environ; readlink /proc/1/fd/0; head -c1 /proc/1/mem")
        # init is not dumpable: its environment, its fds' targets and its memory stay closed
        assert r.stderr.count("Permission denied") == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert sandbox_id(pool, facts) == before

    def test_exit_statuses_match_a_fresh_sandbox(self, pool: SandboxPool, facts: HostFacts) -> None:
        for script in ("exit 3", "kill -KILL $$", "true"):
            reused = run(pool, facts, script)
            fresh = execute(ExecRequest(policy=WIDE, id="t", argv=("/bin/sh", "-c", script), sandbox=WORKSPACE), facts,
                            pin="bwrap")
            assert (reused.status, reused.rc) == (fresh.status, fresh.rc), script


class TestSurvival:
    def test_a_timeout_kills_the_whole_task_and_keeps_the_sandbox(self, pool: SandboxPool, facts: HostFacts) -> None:
        marker = f"t{os.getpid()}"
        before = sandbox_id(pool, facts)
        r = run(pool, facts, "setsid sleep 300 & sleep 300", timeout_s=0.5, env={"SANDFLEET_TEST_MARKER": marker})
        assert r.status is Status.TIMEOUT and r.rc is None
        assert host_processes_with(marker) == []
        assert sandbox_id(pool, facts) == before

    def test_a_sandbox_killed_between_tasks_is_replaced(self, pool: SandboxPool, facts: HostFacts) -> None:
        before = sandbox_id(pool, facts)
        for box in list(pool._boxes.values()):
            os.killpg(box.proc.pid, signal.SIGKILL)
            box.proc.wait()
        assert sandbox_id(pool, facts) != before

    def test_a_sandbox_killed_during_a_task_fails_that_task_only(self, pool: SandboxPool, facts: HostFacts) -> None:
        sandbox_id(pool, facts)
        box = next(iter(pool._boxes.values()))
        killer = threading.Timer(0.5, lambda: os.killpg(box.proc.pid, signal.SIGKILL))
        killer.start()
        try:
            r = run(pool, facts, "sleep 300", timeout_s=60)
        finally:
            killer.cancel()
        assert r.status is Status.ERROR and "sandbox ended" in (r.message or ""), r
        assert run(pool, facts, "echo next").stdout == "next\n"

    def test_a_sandbox_that_cannot_start_falls_back_to_a_fresh_one(self, facts: HostFacts) -> None:
        broken = SandboxPool(python=("/nonexistent/python3",), fresh_first=0)
        try:
            r = run(broken, facts, "echo fresh")
            again = run(broken, facts, "echo fresh")
        finally:
            broken.close()
        assert r.status is Status.OK and r.stdout == "fresh\n" and "--as-pid-1" not in r.wrapper
        assert any("fresh sandbox" in w for w in r.warnings) and again.status is Status.OK


class TestForms:
    BWRAP = ("bwrap", "--unshare-pid", "--ro-bind", "/", "/", "--chdir", "/w", "--", "echo", "--chdir", "x")

    def test_the_key_is_everything_before_the_tasks_chdir(self) -> None:
        wrapper = Wrapper("bwrap", self.BWRAP, cwd="/w")
        assert split_wrapper(wrapper, ("echo", "--chdir", "x")) == ("bwrap", "--unshare-pid", "--ro-bind", "/", "/")
        assert split_wrapper(wrapper, ("echo",)) is None  # the tail must be exactly this task's
        assert split_wrapper(Wrapper("landlock", ("echo",), cwd="/w"), ("echo",)) is None
        # the environment travels with each task (the sandbox's init runs it with it), not in the key
        env = dataclasses.replace(wrapper, env={"TMPDIR": "/t"}, files={"fd 3": "filter"})
        assert split_wrapper(env, ("echo", "--chdir", "x")) == split_wrapper(wrapper, ("echo", "--chdir", "x"))

    def test_the_persistent_form_names_the_task_it_carries(self) -> None:
        form = persistent_wrapper(Wrapper("bwrap", self.BWRAP, cwd="/w"), ("echo", "--chdir", "x"), ("python3",), 5)
        assert form is not None
        assert form.argv == ("bwrap", "--unshare-pid", "--ro-bind", "/", "/", "--as-pid-1", "--chdir", "/", "--",
                             "python3", "-I", "-S", "-c", LOADER)
        (entry,) = form.files.values()
        assert entry == '{"argv": ["echo", "--chdir", "x"], "cwd": "/w", "timeout_s": 5}\n'


def _cwd(path: str) -> object:
    from sandfleet_agent.portable.intent import FilePath
    from sandfleet_agent.portable.pathuri import PathUri

    return FilePath(str(PathUri.from_native(path)))
