"""Bounded tasks, attempted for real: a fork bomb, a runaway allocation, a CPU spin and a file
that grows without end each stop at the task's limit, the result says which limit stopped it,
nothing of the task outlives it, and the agent (and a persistent sandbox) keeps serving.

As root here the agent bounds memory and processes with a cgroup (``cgroup1`` on this machine,
``cgroup2`` where delegated); an unprivileged agent without a cgroup uses rlimits, run here as the
test user (:mod:`unprivileged`). CPU time and file size are rlimits everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sandfleet_agent.binding.facts import HostFacts, assumed_facts, cap_eff, own_paths, probe, state_dir
from sandfleet_agent.binding.hostfs import AssumedFs
from sandfleet_agent.bounds import AS_NOTE, nproc_counted_per_userns
from sandfleet_agent.executor import Prepared, execute, prepare
from sandfleet_agent.linux.sandbox_pool import SandboxPool, SandboxStartFailed
from sandfleet_agent.portable.intent import PROFILES, NetworkPolicy, SandboxIntent
from sandfleet_agent.portable.limits import TaskLimits, lowest, merged, parse_limits, parse_size
from sandfleet_agent.portable.policy import DEFAULT, Effective, Policy, complete
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status, WireError, decode_request, encode_request
from support.ci import need
from support.unprivileged import as_user, user_tree

PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
MODES = ("bare", "bwrap", "bwrap-reused")

#: Forks children that sleep until the parent's fork fails; prints how many it made. The marker
#: in argv finds any child that outlived the task.
FORK_BOMB = """
import os, sys, time
made = 0
try:
    while made < 100000:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        made += 1
except OSError as exc:
    print(made, exc.errno)
    sys.exit(3)
print(made, 0)
"""
#: Touches every page of ``argv[1]`` MiB, then says it survived.
ALLOCATE = """
import sys
b = bytearray(int(sys.argv[1]) << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print('alive')
"""
OPEN_FILES = """
import os
fds = []
try:
    while True:
        fds.append(os.open('/dev/null', 0))
except OSError:
    print(len(fds))
"""
NO_LIMITS = TaskLimits()
BUILT_IN = Effective()
#: The built-in policy with `sandbox: false` allowed (the bare column).
BARE_OK = Effective((replace(DEFAULT, unsandboxed=True),))


@pytest.fixture(scope="module")
def host_facts() -> HostFacts:
    return probe()


@pytest.fixture
def ws() -> Iterator[Path]:
    with user_tree() as root:
        (root / "ws").mkdir()
        os.chmod(root / "ws", 0o777)
        yield root / "ws"


def intent(**limits: object) -> SandboxIntent:
    return SandboxIntent(PROFILES["workspace"], NetworkPolicy(), limits=parse_limits(limits))


def run(mode: str, facts: HostFacts, ws: Path, *argv: str, limits: TaskLimits = NO_LIMITS,
        policy: Effective = BUILT_IN, pool: SandboxPool | None = None) -> ExecResult:
    """``argv`` with ``limits``: bare, in a fresh bwrap, or as the third task of a persistent one."""
    facts = dataclasses.replace(facts, workspace_roots=(str(ws),))
    sandbox = None if mode == "bare" else SandboxIntent(PROFILES["workspace"], NetworkPolicy(), limits=limits)
    if sandbox is None:  # a bare task asks nothing: the operator's defaults bound it
        policy = Effective((replace(BARE_OK.operator, resources_default=limits), *policy.layers[1:]))
    request = ExecRequest(id="t", argv=argv, sandbox=sandbox, timeout_s=60, policy=policy)
    if mode != "bwrap-reused":
        return execute(request, facts, pin=None if mode == "bare" else "bwrap")
    own = pool or SandboxPool(fresh_first=0)
    try:
        for _ in "12":
            execute(dataclasses.replace(request, argv=("true",)), facts, pin="bwrap", pool=own)
        result = execute(request, facts, pin="bwrap", pool=own)
    finally:
        if pool is None:
            own.close()
    assert "--as-pid-1" in result.wrapper, result
    return result


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, host_facts: HostFacts) -> str:
    if request.param != "bare":
        status = host_facts.backend("bwrap")
        need(status is not None and status.available, f"bwrap unavailable: {status.reason if status else ''}")
    return str(request.param)


@pytest.fixture
def cgroups(host_facts: HostFacts) -> HostFacts:
    need(host_facts.limits.startswith("cgroup"), f"no task cgroups here: {host_facts.limits_reason}")
    return host_facts


def survivors(marker: str) -> list[int]:
    """Processes whose command line carries ``marker`` (a task's children that outlived it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


class TestParsing:
    def test_sizes_and_counts(self) -> None:
        assert parse_size("512M", "memory") == 512 << 20
        assert parse_size("2GiB", "memory") == 2 << 30
        assert parse_size(4096, "memory") == 4096
        assert parse_limits({"pids": 64, "file_size": "1k"}) == TaskLimits(pids=64, file_size=1024)

    @pytest.mark.parametrize(("data", "says"), [
        ({"memory": "lots"}, "memory must be a positive size"),
        ({"memory": 0}, "memory must be a positive size"),
        ({"pids": "64"}, "pids must be a positive whole number"),
        ({"pids": True}, "pids must be a positive whole number"),
        ({"cpu": 1}, "unknown limit 'cpu'"),
        ({"memory": "99999999999T"}, "larger than any host can hold"),
        ({"open_files": 1 << 70}, "larger than any host can hold"),
    ])
    def test_bad_limits_say_what_is_wrong(self, data: dict[str, object], says: str) -> None:
        with pytest.raises(ValueError, match=says):
            parse_limits(data)

    def test_merged_and_lowest(self) -> None:
        asked, defaults = TaskLimits(memory=10), TaskLimits(memory=20, pids=5)
        assert merged(asked, defaults) == TaskLimits(memory=10, pids=5)
        assert lowest(TaskLimits(memory=10), TaskLimits(memory=5, pids=7)) == TaskLimits(memory=5, pids=7)


class TestPolicy:
    def test_defaults_fill_what_the_task_did_not_ask(self) -> None:
        policy = Effective((complete(Policy(source="op", resources_default=TaskLimits(pids=100, cpu_seconds=60))),))
        chosen, denial = policy.task_limits(TaskLimits(pids=10), mem_total=8 << 30)
        assert denial is None
        assert chosen == TaskLimits(memory=4 << 30, pids=10, cpu_seconds=60, output=1 << 20)

    def test_asking_above_max_is_denied_naming_the_layer(self) -> None:
        policy = Effective((DEFAULT,
                            Policy(source="/etc/sandfleet/policy.yml", resources_max=TaskLimits(memory=1 << 30))))
        _, denial = policy.task_limits(TaskLimits(memory=2 << 30), mem_total=8 << 30)
        assert denial is not None
        assert "memory 2 GiB exceeds the policy's resources.max 1 GiB" in denial.message
        assert "/etc/sandfleet/policy.yml" in denial.message

    def test_a_host_max_lowers_the_operator_default(self) -> None:
        policy = Effective((complete(Policy(source="op", resources_default=TaskLimits(pids=1000))),
                            Policy(source="host", resources_max=TaskLimits(pids=50))))
        chosen, denial = policy.task_limits(TaskLimits(), mem_total=0)
        assert denial is None and chosen.pids == 50

    def test_denied_before_anything_runs(self, host_facts: HostFacts, ws: Path, tmp_path: Path) -> None:
        need(host_facts.backend("bwrap") is not None, "no bwrap")
        flag = ws / "ran"
        policy = Effective((complete(Policy(source="op", resources_max=TaskLimits(pids=100))),))
        r = run("bwrap", host_facts, ws, "touch", str(flag), limits=TaskLimits(pids=101), policy=policy)
        assert r.status is Status.DENIED, r
        assert "limits.pids 101 exceeds the policy's resources.max 100" in (r.message or "")
        assert not flag.exists()


class TestEnforced:
    def test_a_fork_bomb_stops_at_the_pids_limit(self, mode: str, cgroups: HostFacts, ws: Path) -> None:
        marker = f"bomb-{uuid.uuid4().hex}"
        r = run(mode, cgroups, ws, PY, "-c", FORK_BOMB, marker, limits=TaskLimits(pids=32))
        made, errno = (int(x) for x in r.stdout.split())
        assert errno == 11 and made < 32, r  # EAGAIN: the cgroup refused the fork
        assert r.status is Status.FAILED and r.limit == "pids", r
        assert "pids limit 32 reached" in (r.message or "")
        assert r.limits_mechanism == cgroups.limits and r.limits["pids"] == 32
        assert survivors(marker) == []

    def test_a_runaway_allocation_is_killed_and_the_host_goes_on(self, mode: str, cgroups: HostFacts,
                                                                  ws: Path) -> None:
        pool = SandboxPool(fresh_first=0)
        try:
            r = run(mode, cgroups, ws, PY, "-c", ALLOCATE, "512", limits=TaskLimits(memory=64 << 20), pool=pool)
            assert r.status is Status.FAILED and r.limit == "memory", r
            assert "killed: memory limit 64 MiB reached" in (r.message or "")
            assert "alive" not in r.stdout
            after = run(mode, cgroups, ws, PY, "-c", ALLOCATE, "16", limits=TaskLimits(memory=64 << 20), pool=pool)
            assert after.status is Status.OK and after.stdout.strip() == "alive", after
        finally:
            pool.close()

    def test_cpu_time_stops_a_spin(self, mode: str, host_facts: HostFacts, ws: Path) -> None:
        r = run(mode, host_facts, ws, PY, "-c", "while True: pass", limits=TaskLimits(cpu_seconds=1))
        assert r.status is Status.FAILED and r.limit == "cpu_seconds", r
        assert "cpu_seconds limit 1 s reached" in (r.message or "")

    def test_file_size_stops_a_growing_file(self, mode: str, host_facts: HostFacts, ws: Path) -> None:
        r = run(mode, host_facts, ws, "dd", "if=/dev/zero", f"of={ws}/big", "bs=64k", "count=64",
                limits=TaskLimits(file_size=1 << 20))
        assert r.status is Status.FAILED and r.limit == "file_size", r
        assert (ws / "big").stat().st_size <= 1 << 20

    def test_open_files(self, mode: str, host_facts: HostFacts, ws: Path) -> None:
        r = run(mode, host_facts, ws, PY, "-c", OPEN_FILES, limits=TaskLimits(open_files=64))
        assert r.status is Status.OK, r
        assert int(r.stdout) < 64

    def test_output_is_capped(self, mode: str, host_facts: HostFacts, ws: Path) -> None:
        r = run(mode, host_facts, ws, PY, "-c", "print('x' * 100000)", limits=TaskLimits(output=4096))
        assert r.status is Status.OK and r.stdout_truncated, r
        assert len(r.stdout.encode()) <= 4096 + 200


class TestPersistentSandbox:
    def test_each_task_gets_its_own_limits(self, cgroups: HostFacts, ws: Path) -> None:
        """Same policy, one sandbox: a tight task then a loose one, then tight again; a limit set
        for one task never carries over to the next."""
        need(cgroups.backend("bwrap") is not None, "no bwrap")
        pool = SandboxPool(fresh_first=0)
        try:
            tight = run("bwrap-reused", cgroups, ws, PY, "-c", FORK_BOMB, "tight", limits=TaskLimits(pids=16),
                        pool=pool)
            boxes = pool.pids()
            loose = run("bwrap-reused", cgroups, ws, PY, "-c", FORK_BOMB, "loose", limits=TaskLimits(pids=128),
                        pool=pool)
            again = run("bwrap-reused", cgroups, ws, PY, "-c", ALLOCATE, "128", limits=TaskLimits(memory=64 << 20),
                        pool=pool)
            roomy = run("bwrap-reused", cgroups, ws, PY, "-c", ALLOCATE, "128", limits=TaskLimits(memory=512 << 20),
                        pool=pool)
            assert pool.pids() == boxes  # no task needed a new sandbox
        finally:
            pool.close()
        assert tight.limit == "pids" and int(tight.stdout.split()[0]) < 16, tight
        assert loose.limit == "pids" and 16 < int(loose.stdout.split()[0]) < 128, loose
        assert again.limit == "memory", again
        assert roomy.status is Status.OK and roomy.limit is None, roomy

    def test_tasks_inherit_the_limits_their_sandbox_took_and_cannot_raise_them(self, host_facts: HostFacts,
                                                                               ws: Path) -> None:
        """Init takes its tasks' rlimits itself (file size and open files here) and starts them
        without a fork: each task has exactly its own limits, soft and hard, cannot raise them,
        and tasks with other limits (or none) run in sandboxes of their own."""
        need(host_facts.backend("bwrap") is not None, "no bwrap")
        show = ("ulimit -Sf; ulimit -Hf; ulimit -Sn; ulimit -Hn; "
                "(ulimit -Hn 100000) 2>/dev/null && echo raised || echo refused")
        tight, loose = TaskLimits(file_size=1 << 20, open_files=300), TaskLimits(file_size=4 << 20, open_files=400)
        pool = SandboxPool(fresh_first=0)
        try:
            first = run("bwrap-reused", host_facts, ws, "/bin/sh", "-c", show, limits=tight, pool=pool)
            boxes = len(pool.pids())
            other = run("bwrap-reused", host_facts, ws, "/bin/sh", "-c", show, limits=loose, pool=pool)
            unbounded = run("bwrap-reused", host_facts, ws, "/bin/sh", "-c", "ulimit -Hf", pool=pool)
            again = run("bwrap-reused", host_facts, ws, "/bin/sh", "-c", show, limits=tight, pool=pool)
            assert len(pool.pids()) == boxes + 2  # one sandbox each, the first one serving `again`
        finally:
            pool.close()
        assert first.stdout == again.stdout == "2048\n2048\n300\n300\nrefused\n", (first, again)
        assert other.stdout == "8192\n8192\n400\n400\nrefused\n", other
        assert unbounded.stdout == "unlimited\n", unbounded

    def test_a_sandbox_told_to_start_a_task_with_other_limits_retires(self, host_facts: HostFacts, ws: Path) -> None:
        """An agent that sent a sandbox a task with rlimits other than those its init took would
        have it start with limits that are not its own: init refuses, nothing runs."""
        need(host_facts.backend("bwrap") is not None, "no bwrap")
        pool = SandboxPool(fresh_first=0)
        try:
            run("bwrap-reused", host_facts, ws, "true", limits=TaskLimits(file_size=1 << 20), pool=pool)
            box = next(iter(pool._boxes.values()))
            with pytest.raises(SandboxStartFailed, match="its tasks inherit other limits"):
                box.run(("/bin/sh", "-c", f"touch {ws}/ran"), cwd=str(ws), env={}, timeout_s=10, cancel_fd=None,
                        cap=4096, limits=TaskLimits(file_size=2 << 20))
            assert box.proc.wait_for(5) is not None  # init exits, and the sandbox with it
        finally:
            pool.close()
        assert not (ws / "ran").exists()


def _user_facts(ws: str) -> HostFacts:
    """This host's facts as the unprivileged user's agent has them, ``ws`` its workspace."""
    home = os.environ["HOME"]
    return dataclasses.replace(probe(), home=home, euid=os.geteuid(), cap_eff=cap_eff(), state_dir=state_dir(home),
                               protected=own_paths(), workspace_roots=(ws,))


def _unprivileged(ws: str, code: str, arg: str, limits: TaskLimits) -> ExecResult:
    facts = _user_facts(ws)
    assert facts.limits == "rlimit", facts.limits_reason
    request = ExecRequest(id="t", argv=(PY, "-c", code, arg), timeout_s=60,
                          sandbox=SandboxIntent(PROFILES["workspace"], NetworkPolicy(), limits=limits))
    return execute(request, facts, pin="bwrap")


def _unprivileged_reused(ws: str, code: str, arg: str, limits: TaskLimits, others: int) -> ExecResult:
    """:func:`_unprivileged` as the third task of a persistent sandbox, while ``others``
    processes of the same user run outside it (sleepers, killed after)."""
    facts = _user_facts(ws)
    sleepers = [subprocess.Popen(["sleep", "120"]) for _ in range(others)]
    pool = SandboxPool(python=(PY,), fresh_first=0)  # an interpreter the user can run (not a pyenv under /root)
    try:
        intent = SandboxIntent(PROFILES["workspace"], NetworkPolicy(), limits=limits)
        for _ in "12":
            execute(ExecRequest(id="t", argv=("true",), timeout_s=60, sandbox=intent), facts, pin="bwrap", pool=pool)
        result = execute(ExecRequest(id="t", argv=(PY, "-c", code, arg), timeout_s=60, sandbox=intent),
                         facts, pin="bwrap", pool=pool)
    finally:
        pool.close()
        for proc in sleepers:
            proc.kill()
            proc.wait()
    assert "--as-pid-1" in result.wrapper, (result.message, result.warnings)
    return result


@pytest.mark.parametrize(("release", "per_userns"), [
    ("6.18.44-fc-v1252", True), ("5.14.0-284.el9.x86_64", True), ("5.13.19", False),
    ("4.18.0-553.el8_10.x86_64", False), ("5.4.0-150-generic", False), ("garbage", False), ("5", False)])
def test_only_kernels_from_5_14_count_processes_per_user_namespace(release: str, per_userns: bool) -> None:
    """Before 5.14 the kernel counted every process of the user against RLIMIT_NPROC, wherever it
    ran: a persistent sandbox's task then needs the user's processes added, as any other task."""
    assert nproc_counted_per_userns(release) is per_userns


class TestWithoutCgroups:
    """An agent logged in as an ordinary user: no cgroup of its own, so rlimits."""

    @pytest.fixture(autouse=True)
    def _bwrap(self, host_facts: HostFacts) -> None:
        status = host_facts.backend("bwrap")
        need(status is not None and status.available, "bwrap unavailable")

    def test_memory_is_bounded_by_address_space_and_said(self, ws: Path) -> None:
        small = as_user(_unprivileged, str(ws), ALLOCATE, "32", TaskLimits(memory=256 << 20))
        assert small.status is Status.OK and small.stdout.strip() == "alive", small
        assert small.limits_mechanism == "rlimit" and AS_NOTE in small.warnings
        big = as_user(_unprivileged, str(ws), ALLOCATE, "512", TaskLimits(memory=256 << 20))
        assert big.status is Status.FAILED and "MemoryError" in big.stderr, big

    def test_a_fork_bomb_stops_at_the_user_process_limit(self, ws: Path) -> None:
        marker = f"bomb-{uuid.uuid4().hex}"
        r = as_user(_unprivileged, str(ws), FORK_BOMB, marker, TaskLimits(pids=24))
        made, errno = (int(x) for x in r.stdout.split())
        assert errno == 11 and made <= 24, r
        assert survivors(marker) == []

    def test_a_fork_bomb_in_a_persistent_sandbox_gets_no_more_for_the_users_other_processes(self, ws: Path) -> None:
        """The sandbox is a user namespace of its own, where the kernel counts only its processes:
        the limit is the task's pids plus its pid 1, not plus every process the user has outside."""
        marker = f"bomb-{uuid.uuid4().hex}"
        r = as_user(_unprivileged_reused, str(ws), FORK_BOMB, marker, TaskLimits(pids=24), 60)
        made, errno = (int(x) for x in r.stdout.split())
        assert errno == 11 and 16 <= made <= 24, r
        assert r.limits_mechanism == "rlimit"
        assert survivors(marker) == []


class TestOtherHosts:
    """What a macOS or Windows host cannot bound is refused when asked for, skipped with a warning
    when the policy allows best effort, and dropped quietly when only a built-in default."""

    def _prepare(self, os_name: str, limits: TaskLimits, policy: Effective = BUILT_IN) -> Prepared | ExecResult:
        facts = dataclasses.replace(assumed_facts(os_name, "dev", ()), mem_total=8 << 30)
        request = ExecRequest(id="t", argv=("make",), policy=policy,
                              sandbox=SandboxIntent(PROFILES["workspace"], NetworkPolicy(), limits=limits))
        return prepare(request, facts, AssumedFs(os_name), None)

    def test_macos_refuses_an_asked_memory_limit(self) -> None:
        r = self._prepare("macos", TaskLimits(memory=1 << 30))
        assert isinstance(r, ExecResult) and r.status is Status.SANDBOX_UNAVAILABLE, r
        assert "macos cannot enforce memory" in (r.message or "")

    def test_best_effort_runs_without_it_and_says_so(self) -> None:
        policy = Effective((replace(DEFAULT, resources_best_effort=True),))
        r = self._prepare("macos", TaskLimits(memory=1 << 30, cpu_seconds=60), policy)
        assert isinstance(r, Prepared), r
        assert r.limits == TaskLimits(pids=4096, cpu_seconds=60, output=1 << 20)
        assert "limits: memory is not enforced on macos (resources.best_effort)" in r.warnings

    def test_a_host_layer_saying_no_wins(self) -> None:
        policy = Effective((replace(DEFAULT, resources_best_effort=True),
                            Policy(source="host", resources_best_effort=False)))
        r = self._prepare("windows", TaskLimits(pids=10), policy)
        assert isinstance(r, ExecResult) and r.status is Status.SANDBOX_UNAVAILABLE, r

    def test_built_in_defaults_are_dropped_quietly(self) -> None:
        r = self._prepare("windows", TaskLimits())
        assert isinstance(r, Prepared), r
        assert r.limits == TaskLimits(output=1 << 20)
        assert not [w for w in r.warnings if w.startswith("limits:")]


class TestWire:
    """Limits stay what was asked on the wire; a hostile caller's values are refused, never run."""

    def test_round_trip(self) -> None:
        req = ExecRequest(id="t", argv=("make",), sandbox=intent(memory="2G", pids=64, output=4096))
        sandbox = decode_request(encode_request(req)).sandbox
        assert sandbox is not None and sandbox.limits == TaskLimits(memory=2 << 30, pids=64, output=4096)

    @pytest.mark.parametrize("bad", [{"memory": -1}, {"pids": 1e9}, {"fork": 1}, {"memory": 1 << 80}, []])
    def test_hostile_limits_are_a_wire_error(self, bad: object) -> None:
        line = json.loads(encode_request(ExecRequest(id="t", argv=("make",), sandbox=intent(pids=1))))
        line["sandbox"]["limits"] = bad
        with pytest.raises(WireError, match="limits"):
            decode_request(json.dumps(line))
