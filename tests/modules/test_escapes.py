"""Each way out of the Linux sandboxes an attacker tried, attempted for real and shown to fail.

Every test here is an escape that worked before the sandboxes were hardened: a task writing
host-global kernel state as root, reaching the operator's ssh-agent or docker.sock through a
pathname UNIX socket, reading or planting keys in a keyring, leaving state in a persistent sandbox,
keeping root's powers under Landlock, outliving its task, renicing host processes, leaving a
set-user-ID binary behind, poisoning the agent's own code, or widening a deny rule through a
symlink it can re-point. Each also checks what must keep working, so a sandbox that simply breaks
everything could not pass. Landlock runs only for an unprivileged agent, so its column drops to
the test user (:mod:`unprivileged`); bwrap runs as root here, the harder case for it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandfleet_agent import agent
from sandfleet_agent.binding.bind import LocalFs, bind
from sandfleet_agent.binding.facts import HostFacts, cap_eff, own_paths, probe, state_dir
from sandfleet_agent.executor import execute
from sandfleet_agent.linux.sandbox_pool import SandboxPool
from sandfleet_agent.portable import wire
from sandfleet_agent.portable.intent import (
    PROFILES,
    Access,
    FilePath,
    NetworkMode,
    NetworkPolicy,
    Permission,
    SandboxIntent,
)
from sandfleet_agent.portable.pathuri import PathUri
from sandfleet_agent.portable.policy import Effective
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status
from support.ci import need
from support.policies import WIDE
from support.unprivileged import account, as_user, user_tree

BUILT_IN = Effective()
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
BACKENDS = ("bwrap", "bwrap-reused", "landlock")


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
def ws() -> Iterator[Path]:
    """A workspace both root's sandbox and the test user's may write. Tasks write into its
    ``sub`` directory: under Landlock the workspace root itself takes no new entries while a
    read-only ``.git`` must be kept in it (Landlock grants its entries one by one)."""
    with user_tree() as root:
        for d in (root / "ws", root / "ws" / "sub"):
            d.mkdir()
            os.chmod(d, 0o777)
        yield root / "ws"


def uri(path: Path | str) -> FilePath:
    return FilePath(str(PathUri.from_native(str(path))))


def workspace(network: NetworkMode = NetworkMode.NONE, *extra: Permission) -> SandboxIntent:
    return SandboxIntent(PROFILES["workspace"] + extra, NetworkPolicy(network))


def as_agent_user(facts: HostFacts, home: str | None = None) -> HostFacts:
    home = home or os.environ["HOME"]
    return dataclasses.replace(facts, home=home, euid=os.geteuid(), cap_eff=cap_eff(), state_dir=state_dir(home),
                               protected=own_paths())


def _execute(request: ExecRequest, facts: HostFacts, pin: str, home: str | None = None) -> ExecResult:
    return execute(request, as_agent_user(facts, home), pin=pin)


def run(backend: str, facts: HostFacts, ws: Path, *argv: str, intent: SandboxIntent | None = None,
        timeout: float = 30, policy: Effective = BUILT_IN, home: str | None = None) -> ExecResult:
    """``argv`` in a sandbox of ``intent`` (default: the workspace profile, network none) with
    ``ws`` as the workspace, under ``policy`` (default: the built-in one); the reused column runs
    it as the third task of a persistent sandbox."""
    name, _, mode = backend.partition("-")
    facts = dataclasses.replace(facts, workspace_roots=(str(ws),))
    request = ExecRequest(id="t", argv=argv, sandbox=intent or workspace(), timeout_s=timeout, policy=policy)
    if name == "landlock":
        return as_user(_execute, request, facts, name, home)
    if mode != "reused":
        return execute(request, facts, pin=name)
    pool = SandboxPool(fresh_first=0)
    try:
        for _ in "12":
            execute(dataclasses.replace(request, argv=("true",)), facts, pin=name, pool=pool)
        result = execute(request, facts, pin=name, pool=pool)
    finally:
        pool.close()
    assert "--as-pid-1" in result.wrapper, result
    return result


def py(code: str) -> tuple[str, ...]:
    return (PY, "-c", code)


#: Tries each statement of a dict and prints {name: "OK" | errno name} as JSON.
PROBE = """
import errno, json, os, socket, sys
out = {}
for name, stmt in json.loads(sys.argv[1]).items():
    try:
        exec(stmt)
        out[name] = "OK"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(out))
"""


def attempt(backend: str, facts: HostFacts, ws: Path, ops: dict[str, str], **kw: object) -> dict[str, str]:
    r = run(backend, facts, ws, PY, "-c", PROBE, json.dumps(ops), **kw)  # type: ignore[arg-type]
    assert r.status is Status.OK, r
    return json.loads(r.stdout)  # type: ignore[no-any-return]


class TestHostGlobalState:
    def test_proc_sys_and_sysrq_are_read_only(self, backend: str, host_facts: HostFacts, ws: Path) -> None:
        """As root, uid 0 in bwrap's user namespace passes the permission check of these files:
        kernel.core_pattern alone would run any program as host root. Writing the current value
        back is harmless if it ever got through; opening sysrq-trigger writes nothing."""
        pattern = Path("/proc/sys/kernel/core_pattern").read_text()
        out = attempt(backend, host_facts, ws, {
            "core_pattern": f"open('/proc/sys/kernel/core_pattern', 'w').write({pattern!r})",
            "drop_caches": "open('/proc/sys/vm/drop_caches', 'w')",
            "sysrq": "open('/proc/sysrq-trigger', 'w')",
            "read_sysctl": "open('/proc/sys/kernel/ostype').read()",
        })
        refused = {"EROFS", "EACCES", "EPERM"}
        assert out["read_sysctl"] == "OK"
        assert {out["core_pattern"], out["drop_caches"]} <= refused, out
        assert out["sysrq"] in (refused if Path("/proc/sysrq-trigger").exists() else {"ENOENT"}), out

    def test_keys_are_hidden_and_keyrings_unreachable(self, backend: str, host_facts: HostFacts, ws: Path) -> None:
        out = attempt(backend, host_facts, ws, {
            "keyctl": "import ctypes; n = {'x86_64': 250, 'aarch64': 219}[os.uname().machine]; "
                      "lib = ctypes.CDLL(None, use_errno=True)\n"
                      "if lib.syscall(n, 0, -3, 0) < 0: raise OSError(ctypes.get_errno(), 'keyctl')",
            "add_key": "import ctypes; n = {'x86_64': 248, 'aarch64': 217}[os.uname().machine]; "
                       "lib = ctypes.CDLL(None, use_errno=True)\n"
                       "if lib.syscall(n, b'user', b'planted', b'x', 1, -3) < 0:\n"
                       "    raise OSError(ctypes.get_errno(), 'add_key')",
        })
        assert out == {"keyctl": "EPERM", "add_key": "EPERM"}


class TestSockets:
    @pytest.fixture
    def host_socket(self) -> Iterator[tuple[Path, threading.Event]]:
        """A host service on a pathname UNIX socket the test user may reach (like an ssh-agent)."""
        with user_tree() as root:
            path = root / "agent.sock"
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(str(path))
            os.chmod(path, 0o777)
            srv.listen(4)
            srv.settimeout(0.2)
            reached, stop = threading.Event(), threading.Event()

            def serve() -> None:
                while not stop.is_set():
                    try:
                        conn, _ = srv.accept()
                        reached.set()
                        conn.close()
                    except OSError:
                        continue

            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            yield path, reached
            stop.set()
            thread.join()
            srv.close()

    def test_a_host_unix_socket_is_out_of_reach(self, backend: str, host_facts: HostFacts, ws: Path,
                                               host_socket: tuple[Path, threading.Event]) -> None:
        path, reached = host_socket
        out = attempt(backend, host_facts, ws, {
            "connect": f"s = socket.socket(socket.AF_UNIX); s.connect({str(path)!r})",
            "dgram": f"socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'x', {str(path)!r})",
            "pair": "a, b = socket.socketpair(); a.send(b'x'); assert b.recv(1) == b'x'",
            "pair_dgram": "socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)",
        })
        assert out["pair"] == "OK" and out["connect"] == out["dgram"] == out["pair_dgram"] == "EPERM", out
        assert not reached.is_set()

    def test_network_full_keeps_unix_sockets(self, backend: str, host_facts: HostFacts, ws: Path,
                                            host_socket: tuple[Path, threading.Event]) -> None:
        path, reached = host_socket
        server = str(ws / "sub" / "own.sock")
        out = attempt(backend, host_facts, ws, {
            "connect": f"s = socket.socket(socket.AF_UNIX); s.connect({str(path)!r})",
            "own_server": f"s = socket.socket(socket.AF_UNIX); s.bind({server!r}); s.listen(1)",
        }, intent=workspace(NetworkMode.FULL), policy=WIDE)
        assert out == {"connect": "OK", "own_server": "OK"}
        assert reached.wait(5)

    def test_socket_families_beyond_ip_are_refused(self, backend: str, host_facts: HostFacts, ws: Path) -> None:
        out = attempt(backend, host_facts, ws, {
            "netlink": "socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)",
            "vsock": "socket.socket(40, socket.SOCK_STREAM)",
            "packet": "socket.socket(17, socket.SOCK_RAW)",
            "unix": "socket.socket(socket.AF_UNIX)",
        })
        assert set(out.values()) == {"EPERM"}, out


class TestPowers:
    def test_no_set_id_bits_no_devices_no_namespaces(self, backend: str, host_facts: HostFacts, ws: Path) -> None:
        sub = ws / "sub"
        target = sub / "tool"
        out = attempt(backend, host_facts, ws, {
            "create": f"open({str(target)!r}, 'w').close(); os.chmod({str(target)!r}, 0o755)",
            "setuid": f"os.chmod({str(target)!r}, 0o4755)",
            "setgid": f"os.chmod({str(target)!r}, 0o2755)",
            "creat_setuid": f"os.close(os.open({str(sub / 'made')!r}, os.O_CREAT | os.O_WRONLY, 0o4755))",
            "block_device": f"os.mknod({str(sub / 'disk')!r}, 0o600 | 0o060000, os.makedev(7, 0))",
            "fifo": f"os.mkfifo({str(sub / 'fifo')!r})",
            "userns": "import ctypes\nif ctypes.CDLL(None, use_errno=True).unshare(0x10000000): "
                      "raise OSError(ctypes.get_errno(), 'unshare')",
            "hostname": "import ctypes\nif ctypes.CDLL(None, use_errno=True).sethostname(b'x', 1): "
                        "raise OSError(ctypes.get_errno(), 'sethostname')",
        })
        assert out["create"] == out["fifo"] == "OK", out
        assert {k: out[k] for k in ("setuid", "setgid", "creat_setuid", "block_device", "userns", "hostname")} == \
            dict.fromkeys(("setuid", "setgid", "creat_setuid", "block_device", "userns", "hostname"), "EPERM"), out
        assert not target.stat().st_mode & 0o6000 and not (sub / "disk").exists()

    def test_host_processes_cannot_be_reniced_pinned_or_limited(self, backend: str, host_facts: HostFacts,
                                                                ws: Path) -> None:
        """Landlock has no pid namespace: a host process of the same user is addressable by pid."""
        user = account()
        victim = subprocess.Popen(["sleep", "60"], user=user.pw_uid if backend == "landlock" else None)
        try:
            before = (os.getpriority(os.PRIO_PROCESS, victim.pid), os.sched_getaffinity(victim.pid),
                      Path(f"/proc/{victim.pid}/limits").read_text())
            out = attempt(backend, host_facts, ws, {
                "renice": f"os.setpriority(os.PRIO_PROCESS, {victim.pid}, 19)",
                "renice_user": "os.setpriority(os.PRIO_USER, 0, 19)",
                "pin": f"os.sched_setaffinity({victim.pid}, {{0}})",
                "limit": f"import resource; resource.prlimit({victim.pid}, resource.RLIMIT_NOFILE, (3, 3))",
                "own_nice": "os.setpriority(os.PRIO_PROCESS, 0, 1)",
                "own_limit": "import resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0))",
            })
            after = (os.getpriority(os.PRIO_PROCESS, victim.pid), os.sched_getaffinity(victim.pid),
                     Path(f"/proc/{victim.pid}/limits").read_text())
        finally:
            victim.kill()
            victim.wait()
        assert out["own_nice"] == out["own_limit"] == "OK", out
        assert out["renice"] in ("EPERM", "ESRCH") and out["pin"] in ("EPERM", "ESRCH"), out
        assert out["limit"] in ("EPERM", "ESRCH") and out["renice_user"] == "EPERM", out
        assert after == before


class TestPersistentSandbox:
    @pytest.fixture
    def pool(self) -> Iterator[SandboxPool]:
        p = SandboxPool(fresh_first=0)
        yield p
        p.close()

    def test_nothing_a_task_leaves_reaches_the_next(self, pool: SandboxPool, host_facts: HostFacts,
                                                  ws: Path) -> None:
        """/dev/shm files and their xattrs, POSIX queues, the private temp dir and its mode: emptied
        between tasks or the sandbox retires; the workspace below the temp dir is untouched."""
        need(host_facts.backend("bwrap") is not None and host_facts.backend("bwrap").available,  # type: ignore[union-attr]
             "bwrap unavailable")
        facts = dataclasses.replace(host_facts, workspace_roots=(str(ws),), tmpdir=str(ws.parent))
        (ws / "keep.txt").write_text("the host's\n")

        def task(script: str) -> ExecResult:
            r = execute(ExecRequest(id="t", argv=(PY, "-c", script), sandbox=workspace(), timeout_s=30), facts,
                        pin="bwrap", pool=pool)
            assert r.status is Status.OK, r
            return r

        task("pass")
        plant = task("import os, ctypes\n"
                     "open('/dev/shm/left', 'w').write('x')\n"
                     "os.setxattr('/dev/shm', 'user.note', b'for the next task')\n"
                     "open(os.environ['TMPDIR'] + '/left', 'w').write('x')\n"
                     "os.chmod(os.environ['TMPDIR'], 0o700)\n"
                     "print(os.readlink('/proc/self/ns/pid'))")
        look = task("import os\ntmp = os.environ['TMPDIR']\n"
                    "print(sorted(os.listdir('/dev/shm')), os.listxattr('/dev/shm'), sorted(os.listdir(tmp)),"
                    " oct(os.stat(tmp).st_mode & 0o777))")
        assert look.stdout.startswith("[] [] ['ws'] "), look.stdout  # only the workspace's mount point
        assert (ws / "keep.txt").read_text() == "the host's\n"
        assert "--as-pid-1" in plant.wrapper and "--as-pid-1" in look.wrapper


class TestLandlockIsForUnprivilegedAgents:
    def test_root_is_refused_before_anything_runs(self, host_facts: HostFacts, ws: Path) -> None:
        need(host_facts.landlock_abi > 0, "Landlock unavailable")
        marker = ws / "ran"
        facts = dataclasses.replace(host_facts, workspace_roots=(str(ws),), euid=0, cap_eff=0x1FFFFFFFFFF)
        r = execute(ExecRequest(id="t", argv=("touch", str(marker)), sandbox=workspace()), facts, pin="landlock")
        assert r.status is Status.SANDBOX_UNAVAILABLE and "unprivileged user" in (r.message or "")
        assert not marker.exists()

    def test_a_capability_is_refused_too(self, host_facts: HostFacts, ws: Path) -> None:
        need(host_facts.landlock_abi > 0, "Landlock unavailable")
        facts = dataclasses.replace(host_facts, workspace_roots=(str(ws),), euid=1000, cap_eff=1 << 21)
        r = execute(ExecRequest(id="t", argv=("true",), sandbox=workspace()), facts, pin="landlock")
        assert r.status is Status.SANDBOX_UNAVAILABLE and "CapEff" in (r.message or "")

    def test_what_it_cannot_stop_is_said_in_every_result(self, host_facts: HostFacts, ws: Path) -> None:
        need(host_facts.landlock_abi > 0, "Landlock unavailable")
        r = run("landlock", host_facts, ws, "true")
        assert r.status is Status.OK and any("chmod/utime/setxattr" in w for w in r.warnings), r


def _agent_as_user(lines: list[str]) -> list[dict[str, object]]:
    """The agent loop, as its own process would run it (subreaper, fresh keyring), as the user."""
    out = io.StringIO()
    agent.serve(io.StringIO("".join(line + "\n" for line in lines)), out, own_process=True)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _running(tag: str) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True).stdout.split()]


class TestNothingOutlivesItsTask:
    @pytest.mark.parametrize("pin", ["bwrap", "landlock", None])
    def test_a_daemonised_process_dies_with_its_task(self, pin: str | None, host_facts: HostFacts,
                                                      ws: Path) -> None:
        """fork, setsid, fork again, exec: out of the task's process group and session. The agent
        is its subreaper and kills it when the task ends (bwrap's pid namespace does too)."""
        if pin:
            status = host_facts.backend(pin)
            need(status is not None and status.available, f"{pin} unavailable")
        tag = f"outlive{os.getpid()}{pin}"
        daemon = f"import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n" \
                 f"        os.execvp('bash', ['bash', '-c', 'exec -a {tag} sleep 300'])\n    os._exit(0)\n" \
                 "os.wait()\nimport time; time.sleep(0.3)"
        init = json.dumps({"v": 1, "init": {"workspace_roots": [str(ws)], "sandbox_pin": pin}})
        request = wire.encode_request(ExecRequest(id="d", argv=(PY, "-c", daemon), timeout_s=30, policy=WIDE,
                                                  sandbox=None if pin is None else workspace()))
        replies = as_user(_agent_as_user, [init, request])
        assert replies[1]["status"] == "ok", replies
        deadline = time.monotonic() + 3
        while _running(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running(tag) == []


class TestTheAgentsOwnWalls:
    def test_the_state_dir_is_denied(self, backend: str, host_facts: HostFacts, ws: Path) -> None:
        """The agent's cache (its code on SSH hosts, compiled templates, the render memo) is
        unreadable and unwritable to every task, even one whose policy writes all of home."""
        home = ws.parent / "home"  # a stand-in: a writable home would keep the placeholders of .git & co.
        home.mkdir()
        os.chmod(home, 0o777)
        home_rw = workspace(NetworkMode.NONE, Permission(uri(home), Access.WRITE))
        code = (f"import os, json; d = {str(home / '.cache' / 'sandfleet')!r}; out = {{}}\n"
                "for name, op in (('list', lambda: os.listdir(d)), ('plant', lambda: open(d + '/x', 'w'))):\n"
                "    try: op(); out[name] = 'OK'\n"
                "    except OSError as e: out[name] = e.errno\n"
                "print(json.dumps(out))")
        name = backend.split("-")[0]
        made = as_user(_make_state_dir, str(home)) if name == "landlock" else _make_state_dir(str(home))
        r = run(backend, dataclasses.replace(host_facts, home=str(home), state_dir=state_dir(str(home))), ws, PY, "-c",
                code, intent=home_rw, policy=WIDE, home=str(home))
        assert r.status is Status.OK, r
        assert all(v != "OK" for v in json.loads(r.stdout).values()), r.stdout
        assert made

    def test_a_write_rule_into_the_state_dir_is_refused(self, host_facts: HostFacts, ws: Path) -> None:
        facts = dataclasses.replace(host_facts, workspace_roots=(str(ws),))
        intent = workspace(NetworkMode.NONE, Permission(uri(Path(facts.state_dir) / "agent-x"), Access.WRITE))
        r = execute(ExecRequest(id="t", argv=("true",), sandbox=intent), facts, pin="bwrap")
        assert r.status is Status.SANDBOX_UNAVAILABLE and "sandfleet's own state" in (r.message or "")

    def test_code_that_runs_later_stays_read_only_inside_a_workspace(self, backend: str, host_facts: HostFacts,
                                                                     ws: Path) -> None:
        """A venv (or the agent's code, or a PATH entry) inside a writable root: read-only, existing
        or not; the rest of the workspace stays writable."""
        venv = ws / ".venv"
        (venv / "bin").mkdir(parents=True)
        os.chmod(venv / "bin", 0o777)
        facts = dataclasses.replace(host_facts, protected=(*host_facts.protected, str(venv), str(ws / "not-yet")))
        name = backend.split("-")[0]
        code = ("import os, json; out = {}\n"
                f"for name, path in (('venv', {str(venv / 'bin' / 'python3')!r}), ('later', {str(ws / 'not-yet')!r}),"
                f" ('ok', {str(ws / 'sub' / 'fine.txt')!r})):\n"
                "    try: open(path, 'w').close(); out[name] = 'OK'\n"
                "    except OSError as e: out[name] = e.errno\n"
                "print(json.dumps(out))")
        if name == "landlock":
            r = as_user(_execute_protected, ExecRequest(id="t", argv=(PY, "-c", code), sandbox=workspace()),
                        dataclasses.replace(host_facts, workspace_roots=(str(ws),)), (str(venv), str(ws / "not-yet")))
        else:
            r = run(backend, facts, ws, PY, "-c", code)
        assert r.status is Status.OK, r
        out = json.loads(r.stdout)
        assert out["ok"] == "OK" and out["venv"] != "OK" and out["later"] != "OK", out
        assert not (venv / "bin" / "python3").exists()
        later = ws / "not-yet"  # at most bwrap's empty mount point, which blocked its creation
        assert not later.exists() or (later.is_file() and later.stat().st_size == 0)

    def test_a_deny_rule_behind_a_link_the_task_could_re_point_is_refused(self, host_facts: HostFacts,
                                                                         ws: Path) -> None:
        (ws / "real").mkdir()
        (ws / "real" / "secret").write_text("s")
        (ws / "link").symlink_to(ws / "real")
        facts = dataclasses.replace(host_facts, workspace_roots=(str(ws),))
        intent = workspace(NetworkMode.NONE, Permission(uri(ws / "link" / "secret"), Access.DENY))
        r = execute(ExecRequest(id="t", argv=("cat", str(ws / "link" / "secret")), sandbox=intent), facts, pin="bwrap")
        assert r.status is Status.SANDBOX_UNAVAILABLE and str(ws / "link") in (r.message or "")
        assert "crosses the symlink" in (r.message or "")
        # the same rule naming the link's target is fine
        ok = bind(workspace(NetworkMode.NONE, Permission(uri(ws / "real" / "secret"), Access.DENY)), facts,
                  fs=LocalFs())
        assert ok.access(str(ws / "real" / "secret")) is Access.DENY


def _make_state_dir(home: str) -> bool:
    path = Path(state_dir(home))
    path.mkdir(parents=True, exist_ok=True)
    (path / "marker").write_text("state")
    return True


def _execute_protected(request: ExecRequest, facts: HostFacts, extra: tuple[str, ...]) -> ExecResult:
    mine = as_agent_user(facts)
    return execute(request, dataclasses.replace(mine, protected=(*mine.protected, *extra)), pin="landlock")


def test_the_local_agent_does_not_inherit_the_controllers_secrets() -> None:
    """The local agent's environment (readable by other processes of its user) is minimal."""
    from sandfleet.transports.local import agent_env

    env = agent_env({"PATH": "/usr/bin", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "s", "SSH_AUTH_SOCK": "/tmp/a",
                     "GITHUB_TOKEN": "t", "SANDFLEET_LANDLOCK_MAX_ABI": "3", "LC_ALL": "C"})
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "SANDFLEET_LANDLOCK_MAX_ABI": "3", "LC_ALL": "C"}


def test_the_agent_starts_with_a_fresh_session_keyring() -> None:
    """A key in the session keyring the agent was started with is not in the agent's: even a
    task the operator let run bare cannot find it."""
    keyctl = ctypes.CDLL(None, use_errno=True)
    add_key = {"x86_64": 248, "aarch64": 217}.get(os.uname().machine)
    need(add_key is not None, "add_key number unknown on this machine")
    key = keyctl.syscall(add_key, b"user", f"sandfleet-test-{os.getpid()}".encode(), b"secret", 6, -3)
    need(key > 0, f"cannot add a key to this session keyring: {os.strerror(ctypes.get_errno())}")
    script = ("import ctypes, os, sys; n = {'x86_64': 250, 'aarch64': 219}[os.uname().machine]\n"
              "lib = ctypes.CDLL(None, use_errno=True)\n"
              f"found = lib.syscall(n, 10, -3, b'user', b'sandfleet-test-{os.getpid()}', 0)\n"
              "print('found' if found > 0 else 'absent')")
    init = json.dumps({"v": 1, "init": {"workspace_roots": ["/"], "sandbox_pin": None}})
    request = wire.encode_request(ExecRequest(id="k", argv=(PY, "-c", script), sandbox=None, policy=WIDE))
    direct = subprocess.run([PY, "-c", script], capture_output=True, text=True)
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet_agent.agent"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{init}\n{request}\n")
        proc.stdin.flush()
        proc.stdout.readline()  # hello
        result = json.loads(proc.stdout.readline())
    finally:
        proc.communicate(timeout=30)
    assert direct.stdout == "found\n", direct  # the key is there for this session
    assert result["stdout"] == "absent\n", result
