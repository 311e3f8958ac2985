"""One exit-code contract on every path a task can take (issue 17), shown with real runs.

A command that is not found exits 127; one that cannot be executed (no execute permission, a
directory) 126; a task killed by signal N ``128 + N``, the shell's form and what bwrap reports
for its command; any other code is the task's own. The paths: bare (``sandbox: false``), a fresh
bwrap sandbox, a persistent one (its init spawns the task), a fresh bwrap standing in for a
persistent sandbox that could not start, and Landlock (run as the unprivileged test user: it
refuses a root agent). A fresh bwrap exits 1 when its ``execvp`` fails, like a command exiting 1;
the agent tells them apart by bwrap's ``--json-status-fd`` report (backends/bwrap.py
``start_failure``), so a task printing bwrap's message and exiting 1 still gets 1.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sandfleet_agent.backends.render import environment
from sandfleet_agent.binding.facts import HostFacts, cap_eff, own_paths, probe, state_dir
from sandfleet_agent.executor import execute
from sandfleet_agent.linux.sandbox_pool import SandboxPool
from sandfleet_agent.portable.intent import PROFILES, NetworkPolicy, SandboxIntent
from sandfleet_agent.portable.policy import DEFAULT, Effective
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status
from support.ci import need
from support.unprivileged import as_user, user_tree

PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
PATHS = ("bare", "bwrap", "bwrap-reused", "landlock")
#: The built-in policy with `sandbox: false` allowed (the bare column).
BARE_OK = Effective((replace(DEFAULT, unsandboxed=True),))
MISSING = "pytset-sandfleet-no-such-command"
#: The task's PATH: every directory searchable by root and the test user alike (this process's
#: own PATH may name directories under /root, which the test user's search would be denied:
#: EACCES, hence 126, as execvp reports it).
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
SIGTERM_SELF = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"


@pytest.fixture(scope="module")
def host_facts() -> HostFacts:
    return probe()


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, host_facts: HostFacts) -> str:
    name = str(request.param).split("-")[0]
    if name == "landlock":
        need(host_facts.landlock_abi > 0, "Landlock unavailable")
        environment().get_template("landlock.j2")  # loaded here: the test user may not read this
        import resource  # noqa: F401 - interpreter's files (rlimits are set with it in the child)
    elif name == "bwrap":
        status = host_facts.backend("bwrap")
        need(status is not None and status.available, f"bwrap unavailable: {status.reason if status else ''}")
    return str(request.param)


@pytest.fixture
def ws() -> Iterator[Path]:
    """A workspace the test user owns (Landlock runs as that user) holding ``data.txt``, a
    readable file without execute permission, and ``dir``, a directory."""
    with user_tree() as root:
        (root / "ws").mkdir()
        os.chmod(root / "ws", 0o777)
        (root / "ws" / "data.txt").write_text("echo this must not run\n")
        os.chmod(root / "ws" / "data.txt", 0o644)
        (root / "ws" / "dir").mkdir()
        yield root / "ws"


def _as_agent_user(request: ExecRequest, facts: HostFacts) -> ExecResult:
    home = os.environ["HOME"]
    mine = dataclasses.replace(facts, home=home, euid=os.geteuid(), cap_eff=cap_eff(), state_dir=state_dir(home),
                               protected=own_paths())
    return execute(request, mine, pin="landlock")


def run(path: str, facts: HostFacts, ws: Path, *argv: str, env: dict[str, str] = ENV) -> ExecResult:
    """``argv`` on ``path``: bare, in a fresh bwrap, as the third task of a persistent bwrap
    sandbox, or under Landlock as the unprivileged user."""
    facts = dataclasses.replace(facts, workspace_roots=(str(ws),))
    sandbox = None if path == "bare" else SandboxIntent(PROFILES["workspace"], NetworkPolicy())
    request = ExecRequest(id="t", argv=argv, env=env, sandbox=sandbox, timeout_s=60,
                          policy=BARE_OK if path == "bare" else Effective())
    if path == "landlock":
        return as_user(_as_agent_user, request, facts)
    if path != "bwrap-reused":
        result = execute(request, facts, pin=None if path == "bare" else "bwrap")
        assert result.backend == ("none" if path == "bare" else "bwrap"), result
        assert "--as-pid-1" not in result.wrapper, result
        return result
    pool = SandboxPool(fresh_first=0)
    try:
        for _ in "12":
            warm = execute(dataclasses.replace(request, argv=("true",)), facts, pin="bwrap", pool=pool)
            assert warm.status is Status.OK, warm
        result = execute(request, facts, pin="bwrap", pool=pool)
    finally:
        pool.close()
    assert "--as-pid-1" in result.wrapper, result
    return result


def test_a_missing_command_exits_127(path: str, host_facts: HostFacts, ws: Path) -> None:
    r = run(path, host_facts, ws, MISSING, "-q")
    assert (r.status, r.rc) == (Status.FAILED, 127), r
    assert r.message == f"cannot start {MISSING!r}: No such file or directory", r


def test_a_missing_path_exits_127(path: str, host_facts: HostFacts, ws: Path) -> None:
    r = run(path, host_facts, ws, str(ws / "no-such-file"))
    assert (r.status, r.rc) == (Status.FAILED, 127), r
    assert r.message == f"cannot start {str(ws / 'no-such-file')!r}: No such file or directory", r


def test_a_file_without_execute_permission_exits_126(path: str, host_facts: HostFacts, ws: Path) -> None:
    r = run(path, host_facts, ws, str(ws / "data.txt"))
    assert (r.status, r.rc) == (Status.FAILED, 126), r
    assert r.message == f"cannot start {str(ws / 'data.txt')!r}: Permission denied", r
    assert "must not run" not in r.stdout + r.stderr


def test_a_directory_exits_126(path: str, host_facts: HostFacts, ws: Path) -> None:
    r = run(path, host_facts, ws, str(ws / "dir"))
    assert (r.status, r.rc) == (Status.FAILED, 126), r
    assert r.message == f"cannot start {str(ws / 'dir')!r}: Permission denied", r


def test_a_task_killed_by_a_signal_exits_128_plus_n(path: str, host_facts: HostFacts, ws: Path) -> None:
    r = run(path, host_facts, ws, PY, "-c", SIGTERM_SELF)
    assert (r.status, r.rc) == (Status.FAILED, 128 + 15), r
    if path == "bwrap":  # bwrap reports the number only: a task could have exited 143 itself
        assert r.message == "exited with 143 (as a task killed by signal 15, SIGTERM, does)", r
    else:
        assert r.message == "killed by signal 15 (SIGTERM)", r


def test_a_task_that_exits_1_gets_1(path: str, host_facts: HostFacts, ws: Path) -> None:
    r = run(path, host_facts, ws, PY, "-c", "import sys; print('ran'); sys.exit(1)")
    assert (r.status, r.rc, r.message, r.stdout) == (Status.FAILED, 1, "exited with 1", "ran\n"), r


def test_a_task_that_exits_143_itself_gets_143(path: str, host_facts: HostFacts, ws: Path) -> None:
    r = run(path, host_facts, ws, PY, "-c", "import sys; sys.exit(143)")
    assert (r.status, r.rc) == (Status.FAILED, 143), r
    assert r.message == "exited with 143 (as a task killed by signal 15, SIGTERM, does)", r


@pytest.mark.parametrize("name", [PY, "x"])
def test_a_task_faking_bwraps_exec_failure_still_gets_1(path: str, host_facts: HostFacts, ws: Path,
                                                        name: str) -> None:
    """bwrap's own line, for this very argv[0] or another, as the task's whole stderr, then exit 1."""
    fake = f"bwrap: execvp {name}: No such file or directory"
    r = run(path, host_facts, ws, PY, "-c", f"import sys; sys.stderr.write({fake!r} + '\\n'); sys.exit(1)")
    assert (r.status, r.rc, r.message) == (Status.FAILED, 1, "exited with 1"), r
    assert r.stderr == fake + "\n", r


@pytest.mark.parametrize("path", [p for p in PATHS if p != "bare" or os.geteuid() != 0], indirect=True)
def test_a_path_directory_that_cannot_be_searched_gives_126(path: str, host_facts: HostFacts, ws: Path) -> None:
    """execvp's verdict (GNU env's too), kept by the persistent sandbox's own search: a name not
    found, but behind a directory of PATH the task may not search, is "Permission denied". (Bare
    as root is left out: it searches every directory, CAP_DAC_OVERRIDE; the sandboxes drop that
    capability and Landlock runs unprivileged.)"""
    locked = ws / "locked"
    locked.mkdir(mode=0o000)
    locked.chmod(0o000)
    r = run(path, host_facts, ws, "env", f"PATH={locked}:{ENV['PATH']}", MISSING)
    assert (r.status, r.rc) == (Status.FAILED, 126), r  # GNU env's own execvp says so too
    r = run(path, host_facts, ws, MISSING, env={"PATH": f"{locked}:{ENV['PATH']}"})
    assert (r.status, r.rc, r.message) == (Status.FAILED, 126, f"cannot start {MISSING!r}: Permission denied"), r


def _bwrap(facts: HostFacts) -> None:
    status = facts.backend("bwrap")
    need(status is not None and status.available, f"bwrap unavailable: {status.reason if status else ''}")


def test_the_first_and_later_tasks_of_a_policy_agree(host_facts: HostFacts, ws: Path) -> None:
    """With the agent's default pool the first task of a policy runs in a fresh bwrap and the next
    ones in its persistent sandbox: a typo'd command is 127 either way."""
    _bwrap(host_facts)
    facts = dataclasses.replace(host_facts, workspace_roots=(str(ws),))
    request = ExecRequest(id="t", argv=(MISSING,), env=ENV, timeout_s=60,
                          sandbox=SandboxIntent(PROFILES["workspace"], NetworkPolicy()))
    execute(dataclasses.replace(request, argv=("true",)), facts, pin="bwrap")  # its placeholders (.git...) made
    pool = SandboxPool()
    try:
        results = [execute(request, facts, pin="bwrap", pool=pool) for _ in "123"]
    finally:
        pool.close()
    assert ["--as-pid-1" in r.wrapper for r in results] == [False, True, True], results
    assert {(r.rc, r.message) for r in results} == {(127, f"cannot start {MISSING!r}: No such file or directory")}


@pytest.mark.parametrize(("argv", "rc", "message"), [
    ((MISSING,), 127, f"cannot start {MISSING!r}: No such file or directory"),
    ((PY, "-c", SIGTERM_SELF), 143, "exited with 143 (as a task killed by signal 15, SIGTERM, does)"),
    ((PY, "-c", "raise SystemExit(1)"), 1, "exited with 1"),
])
def test_a_fresh_sandbox_standing_in_for_a_persistent_one_agrees(host_facts: HostFacts, ws: Path,
                                                                 argv: tuple[str, ...], rc: int, message: str) -> None:
    """A persistent sandbox that cannot start (here: its interpreter is missing) leaves the task to
    a fresh bwrap, which keeps the contract."""
    _bwrap(host_facts)
    facts = dataclasses.replace(host_facts, workspace_roots=(str(ws),))
    request = ExecRequest(id="t", argv=argv, env=ENV, sandbox=SandboxIntent(PROFILES["workspace"], NetworkPolicy()),
                          timeout_s=60)
    pool = SandboxPool(python=("/nonexistent/python3",), fresh_first=0)
    try:
        r = execute(request, facts, pin="bwrap", pool=pool)
    finally:
        pool.close()
    assert "--as-pid-1" not in r.wrapper and any("ran in a fresh sandbox" in w for w in r.warnings), r
    assert (r.status, r.rc, r.message) == (Status.FAILED, rc, message), r
