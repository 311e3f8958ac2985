"""Each backend, through the real executor, against real attempts to break each rule.

The same matrix runs for bwrap and Landlock: the forbidden thing must fail *and* the allowed
thing must still work, or a backend that blocks everything would pass. ``bwrap-reused`` runs each
attempt as the second task of a persistent sandbox (modules/sandfleet_agent/linux/sandbox_pool.py), after another task
of the same policy: enforcement must be exactly that of a fresh sandbox. Landlock refuses an agent
that is root, so its column runs the host-side code as the unprivileged test user
(:mod:`unprivileged`); the trees live in a directory that user owns.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandfleet_agent.binding.facts import HostFacts, cap_eff, own_paths, probe, state_dir
from sandfleet_agent.executor import execute
from sandfleet_agent.linux.sandbox_pool import SandboxPool
from sandfleet_agent.portable.intent import (
    PROFILES,
    Access,
    FilePath,
    NetworkMode,
    NetworkPolicy,
    Permission,
    SandboxIntent,
    Special,
)
from sandfleet_agent.portable.pathuri import PathUri
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status
from support.ci import need
from support.policies import WIDE
from support.unprivileged import as_user, user_tree

BACKENDS = ("bwrap", "bwrap-reused", "landlock")
#: The interpreter tasks run: outside /root, so the unprivileged user can run it too.
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


@pytest.fixture(scope="module")
def host_facts() -> HostFacts:
    return probe()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, host_facts: HostFacts) -> str:
    name = str(request.param).split("-")[0]
    status = host_facts.backend(name)
    need(status is not None and status.available, f"{name} unavailable: {status.reason if status else ''}")
    return str(request.param)


@pytest.fixture
def box(host_facts: HostFacts) -> Iterator[dict[str, Path]]:
    """A workspace with a git dir, a scratch temp dir and an outside dir, owned by the test user."""
    with user_tree() as root:
        ws, tmp, outside = root / "ws", root / "scratch", root / "outside"
        as_user(_make_box, ws, tmp, outside)
        yield {"ws": ws, "tmp": tmp, "outside": outside}


def _make_box(ws: Path, tmp: Path, outside: Path) -> None:
    """World-writable: root's sandbox (no capabilities, so no CAP_DAC_OVERRIDE) and the test user
    must both be able to write where the policy lets them."""
    os.umask(0)
    for d in (ws / ".git" / "hooks", ws / "src", tmp, outside):
        d.mkdir(parents=True)
    (ws / "secret.txt").write_text("top secret\n")
    (outside / "data.txt").write_text("outside\n")


def facts_for(host_facts: HostFacts, box: dict[str, Path]) -> HostFacts:
    return dataclasses.replace(host_facts, workspace_roots=(str(box["ws"]),), tmpdir=str(box["tmp"]))


def workspace(network: NetworkMode = NetworkMode.NONE, *extra: Permission) -> SandboxIntent:
    perms = tuple(p for p in PROFILES["workspace"] if p.path != Special("slash_tmp"))
    return SandboxIntent(perms + extra, NetworkPolicy(network))


def as_agent_user(facts: HostFacts) -> HostFacts:
    """``facts`` as the agent running as this (unprivileged) process would probe its identity."""
    home = os.environ["HOME"]
    return dataclasses.replace(facts, home=home, euid=os.geteuid(), cap_eff=cap_eff(), state_dir=state_dir(home),
                               protected=own_paths())


def _execute_as_user(request: ExecRequest, facts: HostFacts, pin: str) -> ExecResult:
    return execute(request, as_agent_user(facts), pin=pin)


def run(backend: str, facts: HostFacts, intent: SandboxIntent, *argv: str) -> ExecResult:
    name, _, mode = backend.partition("-")
    request = ExecRequest(policy=WIDE, id="t", argv=argv, sandbox=intent, timeout_s=30)
    if name == "landlock":
        return as_user(_execute_as_user, request, facts, name)
    if mode != "reused":
        return execute(request, facts, pin=name)
    pool = SandboxPool(fresh_first=0)
    try:
        # Twice: a first task may create a blocked .git's empty mount point, and the policy then
        # renders (equivalently) as a read-only bind of it, which is another sandbox command.
        warm = [execute(dataclasses.replace(request, argv=("true",)), facts, pin=name, pool=pool) for _ in "12"]
        result = execute(request, facts, pin=name, pool=pool)
        served = {box.argv: box.served for box in pool._boxes.values()}
    finally:
        pool.close()
    assert all(w.status is Status.OK for w in warm) and "--as-pid-1" in result.wrapper, (warm, result)
    assert served.get(result.wrapper, 0) >= 2, "the attempt must run in a sandbox that already ran a task"
    return result


def sh(script: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", script)


@pytest.fixture
def listener() -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    srv.close()


CONNECT = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3); print('connected')"
UDP = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
       "s.sendto(b'leak', ('127.0.0.1', int(sys.argv[1])))")


class TestFilesystem:
    def test_writes_inside_the_workspace_work(self, backend: str, host_facts: HostFacts, box: dict[str, Path]) -> None:
        r = run(backend, facts_for(host_facts, box), workspace(), *sh(f"echo hi > {box['ws']}/src/out.txt"))
        assert r.status is Status.OK, r
        assert (box["ws"] / "src" / "out.txt").read_text() == "hi\n"
        assert r.backend == backend.split("-")[0]

    def test_writes_outside_the_roots_fail(self, backend: str, host_facts: HostFacts, box: dict[str, Path]) -> None:
        target = box["outside"] / "planted"
        r = run(backend, facts_for(host_facts, box), workspace(), "touch", str(target))
        assert r.status is Status.FAILED and not target.exists()

    def test_git_hooks_stay_read_only(self, backend: str, host_facts: HostFacts, box: dict[str, Path]) -> None:
        hook = box["ws"] / ".git" / "hooks" / "pre-commit"
        r = run(backend, facts_for(host_facts, box), workspace(), "touch", str(hook))
        assert r.status is Status.FAILED and not hook.exists()

    def test_a_missing_git_cannot_be_created(self, backend: str, host_facts: HostFacts, box: dict[str, Path]) -> None:
        fresh = box["ws"] / "src"  # a workspace root with no .git yet
        facts = dataclasses.replace(facts_for(host_facts, box), workspace_roots=(str(fresh),))
        r = run(backend, facts, workspace(), *sh(f"mkdir -p {fresh}/.git/hooks && touch {fresh}/.git/hooks/x"))
        assert r.status is Status.FAILED and not (fresh / ".git" / "hooks" / "x").exists()
        ok = run(backend, facts, workspace(), *sh(f"echo ok > {fresh}/existing-dir-file || true; ls {fresh}"))
        assert ok.status is Status.OK
        assert not any((fresh / ".git").iterdir()) if (fresh / ".git").exists() else True  # only an empty mount point

    def test_deny_path_cannot_be_read(self, backend: str, host_facts: HostFacts, box: dict[str, Path]) -> None:
        secret = box["ws"] / "secret.txt"
        intent = workspace(NetworkMode.NONE, Permission(FilePath(str(PathUri.from_native(str(secret)))), Access.DENY))
        r = run(backend, facts_for(host_facts, box), intent, "cat", str(secret))
        assert r.status is Status.FAILED and "top secret" not in r.stdout

    def test_system_reads_and_tmpdir_writes_work(self, backend: str, host_facts: HostFacts,
                                                 box: dict[str, Path]) -> None:
        r = run(backend, facts_for(host_facts, box), workspace(),
                *sh('ls /usr/bin >/dev/null && echo t > "$TMPDIR/t.txt" && cat "$TMPDIR/t.txt"'))
        assert r.status is Status.OK, r
        assert r.stdout == "t\n"

    def test_tmpdir_is_private_to_the_task(self, backend: str, host_facts: HostFacts, box: dict[str, Path]) -> None:
        """The host's temp dir is neither written nor shown: a task gets an empty one of its own."""
        (box["tmp"] / "host-file").write_text("the host's\n")
        facts = facts_for(host_facts, box)
        first = run(backend, facts, workspace(), *sh('ls -A "$TMPDIR"; echo left > "$TMPDIR/planted"'))
        second = run(backend, facts, workspace(), *sh('ls -A "$TMPDIR"; echo x > ' + str(box["tmp"] / "direct")))
        assert first.status is Status.OK and first.stdout == "", first
        assert second.stdout == "", second  # nothing the first task left, nothing of the host's
        assert sorted(p.name for p in box["tmp"].iterdir()) == ["host-file"]

    def test_read_only_profile_writes_nothing(self, backend: str, host_facts: HostFacts, box: dict[str, Path]) -> None:
        r = run(backend, facts_for(host_facts, box), SandboxIntent(PROFILES["read-only"]),
                *sh(f"cat {box['outside']}/data.txt; touch {box['ws']}/src/x"))
        assert r.status is Status.FAILED and r.stdout == "outside\n" and not (box["ws"] / "src" / "x").exists()


class TestNetwork:
    def test_network_none_blocks_tcp(self, backend: str, host_facts: HostFacts, box: dict[str, Path],
                                     listener: int) -> None:
        r = run(backend, facts_for(host_facts, box), workspace(), PY, "-c", CONNECT, str(listener))
        assert r.status is Status.FAILED and "connected" not in r.stdout

    def test_network_none_blocks_udp(self, backend: str, host_facts: HostFacts, box: dict[str, Path]) -> None:
        """Whether the send fails (Landlock's socket filter) or lands on the sandbox's own loopback
        (bwrap's network namespace), no datagram may reach the host."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            udp.settimeout(0.5)
            run(backend, facts_for(host_facts, box), workspace(), PY, "-c", UDP,
                str(udp.getsockname()[1]))
            with pytest.raises(socket.timeout):
                udp.recv(16)

    def test_udp_reaches_the_host_with_network_full(self, backend: str, host_facts: HostFacts,
                                                    box: dict[str, Path]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            udp.settimeout(5)
            r = run(backend, facts_for(host_facts, box), workspace(NetworkMode.FULL), PY, "-c", UDP,
                    str(udp.getsockname()[1]))
            assert r.status is Status.OK, r
            assert udp.recv(16) == b"leak"

    def test_network_full_connects(self, backend: str, host_facts: HostFacts, box: dict[str, Path],
                                   listener: int) -> None:
        r = run(backend, facts_for(host_facts, box), workspace(NetworkMode.FULL), PY, "-c", CONNECT,
                str(listener))
        assert r.status is Status.OK and r.stdout == "connected\n", r


class TestFailClosed:
    def test_landlock_refuses_a_managed_network(self, host_facts: HostFacts, box: dict[str, Path]) -> None:
        need(host_facts.landlock_abi > 0, "Landlock unavailable")
        intent = SandboxIntent(PROFILES["workspace"], NetworkPolicy(NetworkMode.MANAGED, ("pypi.org",)))
        r = run("landlock", facts_for(host_facts, box), intent, "touch", str(box["ws"] / "src" / "ran"))
        assert r.status is Status.SANDBOX_UNAVAILABLE and "host name" in (r.message or "")
        assert not (box["ws"] / "src" / "ran").exists()

    def test_landlock_without_tcp_rules_refuses_network_none(self, host_facts: HostFacts,
                                                             box: dict[str, Path]) -> None:
        old_kernel = dataclasses.replace(facts_for(host_facts, box), landlock_abi=3)
        r = run("landlock", old_kernel, workspace(), "touch", str(box["ws"] / "src" / "ran"))
        assert r.status is Status.SANDBOX_UNAVAILABLE and "ABI 4" in (r.message or "")
        assert not (box["ws"] / "src" / "ran").exists()

    def test_nothing_available_means_nothing_runs(self, host_facts: HostFacts, box: dict[str, Path]) -> None:
        from sandfleet_agent.binding.facts import BackendStatus

        none_work = dataclasses.replace(
            facts_for(host_facts, box),
            backends=(BackendStatus("bwrap", False, "bwrap is not installed (install the 'bubblewrap' package)"),
                      BackendStatus("landlock", False, "Landlock is not enabled in this kernel")))
        for pin in (None, "bwrap", "landlock"):
            r = execute(ExecRequest(policy=WIDE, id="t", argv=("touch", str(box["ws"] / "src" / "ran")),
                                    sandbox=workspace()), none_work, pin=pin)
            assert r.status is Status.SANDBOX_UNAVAILABLE, r
            assert "bubblewrap" in (r.message or "") or pin == "landlock"
        assert not (box["ws"] / "src" / "ran").exists()

    def test_a_pin_is_never_replaced(self, host_facts: HostFacts, box: dict[str, Path]) -> None:
        from sandfleet_agent.binding.facts import BackendStatus

        facts = dataclasses.replace(facts_for(host_facts, box), backends=(
            BackendStatus("bwrap", False, "bwrap is not installed"), *[b for b in host_facts.backends
                                                                      if b.name == "landlock"]))
        r = execute(ExecRequest(policy=WIDE, id="t", argv=("true",), sandbox=workspace()), facts, pin="bwrap")
        assert r.status is Status.SANDBOX_UNAVAILABLE and "pinned" in (r.message or "")
        r = execute(ExecRequest(policy=WIDE, id="t", argv=("true",), sandbox=workspace()), facts, pin="seatbelt")
        assert r.status is Status.SANDBOX_UNAVAILABLE and "cannot run on a linux host" in (r.message or "")
