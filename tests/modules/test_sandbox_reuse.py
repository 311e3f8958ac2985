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


# The sandbox's init on its own (modules/sandfleet_agent/linux/sandbox_init.py): how it makes itself
# non-dumpable, reads its state and receives its messages, each pinned where it was made cheaper.

#: The probes about init itself: the host's /dev, mounts, SysV IPC and keys change under other processes.
OWN_STATE = ("limits", "nice", "affinity", "scheduler", "oom_score_adj", "coredump_filter")


def _in_init(body: str, wrapper: tuple[str, ...] = ()) -> str:
    """``body`` run by a fresh ``python -I -S`` (as the sandbox runs init, under ``wrapper``) with
    init's code, as the agent sends it, loaded but not started; its stdout."""
    import subprocess
    import sys

    from sandfleet_agent.linux.sandbox_pool import _init_code

    loader = ("import marshal, sys\nns = {'__name__': 'sandbox_init'}\n"
              "exec(marshal.loads(sys.stdin.buffer.read()), ns)\nexec(sys.argv[1], ns)")
    proc = subprocess.run([*wrapper, sys.executable, "-I", "-S", "-c", loader, body], input=_init_code(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


class TestInitNonDumpable:
    def test_it_reads_back_non_dumpable_without_the_ctypes_package(self) -> None:
        """``_ctypes`` alone (the ``ctypes`` package costs every sandbox start ~2 ms); checked
        afterwards through ``ctypes`` itself."""
        out = _in_init("import sys\n_nondumpable()\nloaded = 'ctypes' in sys.modules\n"
                       "import ctypes\nprint(loaded, ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")
        assert out == "False 0\n"

    def test_ctypes_is_the_fallback_where__ctypes_has_another_shape(self) -> None:
        out = _in_init("import ctypes, sys, types\nsys.modules['_ctypes'] = types.ModuleType('_ctypes')\n"
                       "_nondumpable()\nprint(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")
        assert out == "0\n"

    def test_a_prctl_that_fails_or_does_not_take_fails_closed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from sandfleet_agent.linux import sandbox_init

        monkeypatch.setattr(sandbox_init, "_prctl", lambda: (lambda *args: -1, lambda: 1))
        with pytest.raises(OSError, match=r"prctl\(PR_SET_DUMPABLE\) failed") as failed:
            sandbox_init._nondumpable()
        assert failed.value.errno == 1
        ignored = {sandbox_init.PR_SET_DUMPABLE: 0, sandbox_init.PR_GET_DUMPABLE: 1}
        monkeypatch.setattr(sandbox_init, "_prctl", lambda: (lambda option, *args: ignored[option], lambda: 0))
        with pytest.raises(OSError, match="did not take"):
            sandbox_init._nondumpable()

    def test_init_says_so_and_exits_when_it_stays_dumpable(self) -> None:
        """The whole start, as the agent sees it: one ``error`` line, exit status 1, before any task."""
        import marshal
        import socket
        import subprocess
        import sys

        from sandfleet_agent.linux.sandbox_pool import _init_code

        first = compile("import marshal, os\nns = {'__name__': 'sandbox_init'}\n"
                        "exec(marshal.loads(os.read(0, 1 << 20)), ns)\n"
                        "ns['_prctl'] = lambda: (lambda option, *args: 0 if option == 4 else 1, lambda: 0)\n"
                        "raise SystemExit(ns['main']())", "stays-dumpable", "exec")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours, theirs:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", LOADER], stdin=theirs)
            ours.send(marshal.dumps(first))
            ours.send(_init_code())
            ours.settimeout(30)
            reply = ours.recv(4096)
        assert proc.wait(30) == 1
        assert reply == b"error 0 cannot make the sandbox's init non-dumpable: " \
                        b"[Errno 0] prctl(PR_SET_DUMPABLE) did not take"


class TestInitState:
    def test_its_proc_files_are_read_again_through_descriptors_it_holds(self) -> None:
        """Opened once, close-on-exec, and what a fresh open reads; a change is seen through them."""
        out = _in_init(f"""
import os, resource
start = _state()
held, fds = dict(_HELD), sorted(os.listdir('/proc/self/fd'))
assert {{'/proc/self/mountinfo', '/proc/self/limits', '/proc/self/oom_score_adj'}} <= set(held), held
assert _drift(start, {OWN_STATE!r}) is None and _drift(start, {OWN_STATE!r}) is None
assert _HELD == held and sorted(os.listdir('/proc/self/fd')) == fds  # nothing opened again
assert not any(os.get_inheritable(fd) for fd in held.values())
for path in held:
    with open(path, 'rb') as fh:
        assert _read(path) == fh.read(), path
with open('/proc/self/oom_score_adj', 'w') as fh:
    fh.write(str(int(start['oom_score_adj']) + 1))
print(_drift(start, {OWN_STATE!r}))
""")
        assert out == "oom_score_adj\n"

    @pytest.mark.parametrize("limit", ["resource.RLIMIT_NOFILE", "resource.RLIMIT_CORE", "resource.RLIMIT_RTTIME",
                                       "10"], ids=["NOFILE", "CORE", "RTTIME", "LOCKS"])
    def test_a_changed_limit_is_a_difference(self, limit: str) -> None:
        """Every limit, soft or hard (RTTIME and LOCKS too, which ``_LIMITS`` misses: a task
        inherits them from init). Lowered: the soft one, or the hard one where the soft is 0."""
        out = _in_init(f"""
import resource
start = _state()
soft, hard = resource.getrlimit({limit})
resource.setrlimit({limit}, (0, hard) if soft != 0 else (0, 0))
print(_drift(start, ('limits',)))
""")
        assert out == "limits\n"

    def test_limits_come_from_resource_where_proc_cannot_be_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import resource

        from sandfleet_agent.linux import sandbox_init

        text = sandbox_init._limits()
        assert isinstance(text, bytes) and b"Max open files" in text and b"Max realtime timeout" in text
        monkeypatch.setattr(sandbox_init, "_read", lambda path: b"")
        fallback = sandbox_init._limits()
        assert fallback == [resource.getrlimit(getattr(resource, name)) for name in sandbox_init._LIMITS
                            if hasattr(resource, name)]
        assert fallback != text  # a switch between the two forms retires the sandbox too

    def test_a_mount_is_seen_even_where_a_fresh_read_of_the_table_is_faked(self, tmp_path: Path) -> None:
        """The mount table is read through the descriptor held since the start: a bind mount over
        the path (what a fresh ``open`` would read) hides nothing. Run with CAP_SYS_ADMIN in a
        user and mount namespace of its own (bwrap), so mounts stay there."""
        need(shutil.which("bwrap") is not None, "bwrap is needed")
        need(os.geteuid() == 0, "bwrap --cap-add needs root")
        (tmp_path / "m").mkdir()
        wrapper = ("bwrap", "--unshare-user", "--uid", "0", "--cap-add", "CAP_SYS_ADMIN", "--dev-bind", "/", "/",
                   "--proc", "/proc", "--")
        out = _in_init(f"""
import os, subprocess
start = _state(('mounts',))
fake = {str(tmp_path / 'fake')!r}
with open(fake, 'wb') as fh:
    fh.write(start['mounts'])
subprocess.run(['mount', '-t', 'tmpfs', 'none', {str(tmp_path / 'm')!r}], check=True)
subprocess.run(['mount', '--bind', fake, '/proc/%d/mountinfo' % os.getpid()], check=True)
with open('/proc/self/mountinfo', 'rb') as fh:
    print(fh.read() == start['mounts'], _drift(start, ('mounts',)))
""", wrapper)
        assert out == "True mounts\n"

    def test_empty_removes_everything_inside_and_takes_an_empty_dir_as_it_is(self, tmp_path: Path) -> None:
        from sandfleet_agent.linux import sandbox_init

        top = tmp_path / "scratch"
        (top / "d" / "e").mkdir(parents=True)
        (top / "d" / "e" / "f").write_text("x")
        (top / "g").symlink_to(tmp_path)
        sandbox_init._empty(str(top))
        assert list(top.iterdir()) == [] and tmp_path.is_dir()
        sandbox_init._empty(str(top))  # nothing to remove
        with pytest.raises(OSError):
            sandbox_init._empty(str(tmp_path / "missing"))


class TestInitMessages:
    def test_a_message_arrives_whole_with_its_fds_and_nothing_else(self) -> None:
        """Its size is peeked first; the peek installs no fd, and a message far above a page
        (within the socket's buffer) comes whole."""
        import array
        import marshal
        import socket

        from sandfleet_agent.linux import sandbox_init

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        r, w = os.pipe()
        try:
            init = sandbox_init.Init(theirs, r)
            before = sorted(os.listdir("/proc/self/fd"))
            task = {"op": "run", "env": {b"BIG": b"v" * 150_000}}
            ours.sendmsg([marshal.dumps(task)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))])
            message, fds = init.receive()
            assert message == task and len(fds) == 2
            assert not any(os.get_inheritable(fd) for fd in fds)
            for fd in fds:
                os.close(fd)
            assert sorted(os.listdir("/proc/self/fd")) == before
            ours.send(marshal.dumps(None))  # one byte, not a dict
            assert init.receive() == ({}, [])
            ours.close()
            assert init.receive() == (None, [])
        finally:
            ours.close()
            theirs.close()
            os.close(r)
            os.close(w)
