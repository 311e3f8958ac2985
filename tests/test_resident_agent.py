"""The resident agent (``sandfleet_agent_persist``, docs/resident-agent.md): its life and its walls.

A host here is the bootstrap command run under ``sh -c`` the way sshd runs it (as root, or as
the unprivileged test user through ``setpriv``), with its own cache folder: the real stub, the
real server (``modules/sandfleet_agent/resident.py``), real bwrap and Landlock. The SSH side
(the controller's connection, ``sandfleet agent stop``, become) is tested against real sshd in
``tests/runner/test_resident_ssh.py``. Every attack is made by a task of a run the resident serves,
next to the same move from an unsandboxed process of the same user that succeeds, so a test that
passed because nothing could reach the socket at all would fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from sandfleet.transports import bootstrap
from sandfleet.transports.base import AgentInit, AgentStream
from sandfleet.transports.bootstrap import MARKER, AgentBundle, agent_bundle, build_bundle, parse_reply
from sandfleet_agent.binding.facts import probe
from sandfleet_agent.portable import wire
from sandfleet_agent.portable.intent import PROFILES, NetworkMode, NetworkPolicy, SandboxIntent
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status
from sandfleet_agent.resident import MARK, MAX_PERSIST_S, PROTOCOL
from support.agents import start_time, wait_until
from support.ci import need
from support.policies import WIDE
from support.sshd import BECOME_USER, ensure_user
from support.unprivileged import account, user_tree

PY = "/usr/bin/python3"  # every user can run it (root's own interpreter may live under /root)
PY_VERSION = subprocess.run([PY, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], capture_output=True,
                            text=True).stdout.strip()
NET_FULL = SandboxIntent(PROFILES["workspace"], NetworkPolicy(NetworkMode.FULL))
NET_NONE = SandboxIntent(PROFILES["workspace"], NetworkPolicy(NetworkMode.NONE))


@dataclasses.dataclass
class Run:
    """One run's channel to its host: the stub's ready line, the agent's hello, then tasks."""

    proc: subprocess.Popen[bytes]
    ready: tuple[str, ...]
    hello: dict[str, Any]

    @property
    def resident(self) -> bool:
        return self.ready[:1] == ("resident",)

    def task(self, *argv: str, sandbox: Optional[SandboxIntent] = NET_NONE, timeout: float = 30) -> ExecResult:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = ExecRequest(id=f"t{time.monotonic_ns()}", argv=argv, sandbox=sandbox, timeout_s=timeout, policy=WIDE)
        self.proc.stdin.write(wire.encode_request(request).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.stderr()
        return wire.result_from_json(json.loads(line))

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""

    def close(self) -> int:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        code = self.proc.wait(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


@dataclasses.dataclass
class Host:
    """A host's login as sshd would give it: ``sh -c COMMAND`` as ``user`` (None: root), its own
    cache folder (``XDG_CACHE_HOME``), workspace and environment."""

    cache: Path
    workspace: Path
    user: Optional[pwd.struct_passwd] = None
    bundle: AgentBundle = dataclasses.field(default_factory=agent_bundle)

    @property
    def run_dir(self) -> Path:
        return self.cache / "sandfleet" / "run"

    def shell(self, command: str, **env: str) -> subprocess.Popen[bytes]:
        as_user = [] if self.user is None else ["setpriv", f"--reuid={self.user.pw_uid}",
                                                  f"--regid={self.user.pw_gid}", "--init-groups", "--"]
        home = self.user.pw_dir if self.user is not None else os.environ.get("HOME", "/root")
        return subprocess.Popen([*as_user, "sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=self.workspace,
                                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
                                     "XDG_CACHE_HOME": str(self.cache), **env})

    def start(self, persist: int = 60, pin: Optional[str] = None, bundle: Optional[AgentBundle] = None,
              **env: str) -> Run:
        bundle = bundle or self.bundle
        init = AgentStream.init_line(AgentInit(workspace_roots=(str(self.workspace),), sandbox_pin=pin))
        proc = self.shell(bundle.command(PY, init=init, persist_s=persist), **env)
        assert proc.stdin is not None and proc.stdout is not None
        while True:
            reply = parse_reply(proc.stdout.readline())
            assert reply is not None, proc.communicate(timeout=10)
            if reply.kind != "upload":
                break
            proc.stdin.write(bundle.data)
            proc.stdin.flush()
        assert reply.kind == "ready", reply
        hello = json.loads(proc.stdout.readline() or "null")
        assert isinstance(hello, dict) and "hello" in hello, (reply, hello, proc.communicate(timeout=10))
        return Run(proc, reply.words, hello["hello"])

    def served(self, **kw: Any) -> bool:
        """Whether a run (started, then closed at once) is served by a resident agent."""
        run = self.start(**kw)
        run.close()
        return run.resident

    def stop(self) -> list[str]:
        """``sandfleet agent stop``'s command on this host: the stub's lines."""
        out = self.shell(self.bundle.stop_command(PY)).communicate(timeout=30)[0].decode()
        return [line.removeprefix(MARKER + " ") for line in out.splitlines()]

    def residents(self) -> dict[str, int]:
        """Live resident servers: name -> pid (each writes its pid into its lock file)."""
        found = {}
        for lock in self.run_dir.glob("*.lock") if self.run_dir.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                pid = int(lock.read_text())
                if b"sandfleet-agent" in Path(f"/proc/{pid}/cmdline").read_bytes() and start_time(pid) is not None:
                    found[lock.name.removesuffix(".lock")] = pid
        return found

    def resident(self) -> tuple[str, int]:
        assert wait_until(lambda: len(self.residents()) == 1), self.residents()
        ((name, pid),) = self.residents().items()
        return name, pid

    def kill_residents(self) -> None:
        for pid in self.residents().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


@pytest.fixture
def root_host(tmp_path: Path) -> Iterator[Host]:
    (tmp_path / "ws").mkdir()
    host = Host(tmp_path / "cache", tmp_path / "ws")
    yield host
    host.kill_residents()


@pytest.fixture
def user_host() -> Iterator[Host]:
    """A host whose login is the unprivileged test user: Landlock runs only for such an agent."""
    need(os.geteuid() == 0, "running a host as another user needs root")
    user = account()
    with user_tree() as tree:
        for sub in ("cache", "ws", "ws/sub"):
            (tree / sub).mkdir()
            os.chown(tree / sub, user.pw_uid, user.pw_gid)
        host = Host(tree / "cache", tree / "ws", user)
        yield host
        host.kill_residents()


def ask(path: Path, line: str, fds: tuple[int, ...] = ()) -> str:
    """One raw request to a resident's socket, as a client of its protocol: its answer ("" when
    it closed the connection unanswered)."""
    folder = os.open(path.parent, os.O_PATH)  # as the stub does: any path fits sun_path this way
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        try:
            s.connect(f"/proc/self/fd/{folder}/{path.name}")
        finally:
            os.close(folder)
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        try:
            s.sendmsg([line.encode() + b"\n"], rights)
            return s.recv(200).decode().strip()
        except (BrokenPipeError, ConnectionResetError):  # closed, our line unread
            return ""


class TestLife:
    def test_the_first_run_starts_it_and_the_next_ones_are_served_by_it(self, root_host: Host) -> None:
        first = root_host.start()
        assert not first.resident and first.task("/bin/echo", "one").stdout == "one\n"
        assert first.close() == 0
        name, pid = root_host.resident()
        assert name.startswith("a-" + root_host.bundle.sha256[:40] + "-")
        for n in range(3):
            run = root_host.start()
            assert run.resident, run.ready
            assert run.hello["facts"]["workspace_roots"] == [str(root_host.workspace)]
            result = run.task("/bin/echo", str(n))
            assert (result.status, result.backend, result.stdout) == (Status.OK, "bwrap", f"{n}\n"), result
            assert run.close() == 0
        assert root_host.residents() == {name: pid}

    def test_an_init_line_too_long_for_the_command_line_comes_on_the_channel(self, root_host: Host) -> None:
        root_host.start().close()
        root_host.resident()
        init = AgentStream.init_line(AgentInit(workspace_roots=(str(root_host.workspace),)))
        proc = root_host.shell(root_host.bundle.command(PY, init=None, persist_s=60))
        assert proc.stdin is not None and proc.stdout is not None
        assert parse_reply(proc.stdout.readline()) == bootstrap.Reply("ready", ("resident", PY_VERSION))
        proc.stdin.write(init)
        proc.stdin.flush()
        run = Run(proc, ("resident",), json.loads(proc.stdout.readline())["hello"])
        assert run.hello["facts"]["workspace_roots"] == [str(root_host.workspace)]
        assert run.task("/bin/echo", "late").stdout == "late\n" and run.close() == 0

    def test_no_persist_uses_no_resident_and_starts_none(self, root_host: Host) -> None:
        root_host.start().close()
        root_host.resident()
        run = root_host.start(persist=0)
        assert not run.resident and run.task("/bin/true").status is Status.OK
        run.close()
        root_host.kill_residents()
        root_host.start(persist=0).close()
        time.sleep(0.5)
        assert root_host.residents() == {}

    def test_its_files_are_private_and_its_socket_a_path(self, root_host: Host) -> None:
        """Abstract sockets are outside every filesystem rule, and a task with the host's network
        shares their namespace: the resident listens on a path only, in a folder of its user."""
        root_host.start().close()
        name, _ = root_host.resident()
        modes = {p.name.removeprefix(name): p.lstat().st_mode & 0o7777 for p in root_host.run_dir.iterdir()}
        assert modes == {".sock": 0o700, ".key": 0o600, ".lock": 0o600}
        assert root_host.run_dir.stat().st_mode & 0o7777 == 0o700
        sockets = [line.split()[-1] for line in Path("/proc/net/unix").read_text().splitlines()[1:]
                   if len(line.split()) > 7]
        assert any(s.endswith(name + ".sock") for s in sockets)
        assert not [s for s in sockets if s.startswith("@") and name in s]

    def test_each_run_is_its_own_process_and_takes_its_own_environment(self, root_host: Host) -> None:
        """Two runs at once: two children of the resident, each with the run's own environment,
        working directory and umask, as a freshly started agent would have them."""
        root_host.start(TZ="UTC").close()
        _, server = root_host.resident()
        a, b = root_host.start(TZ="Europe/Paris"), root_host.start(TZ="Asia/Tokyo")
        show = ("/bin/sh", "-c", "echo $PPID $TZ $(umask) $(pwd)")
        seen_a, seen_b = (r.task(*show, sandbox=None).stdout.split() for r in (a, b))
        assert a.resident and b.resident
        assert seen_a[0] != seen_b[0] and {int(seen_a[0]), int(seen_b[0])} <= children(server)
        assert seen_a[1:3] == ["Europe/Paris", "0022"] and seen_b[1] == "Asia/Tokyo"
        assert a.close() == b.close() == 0

    def test_a_run_that_crashes_takes_only_itself_and_what_it_started(self, root_host: Host) -> None:
        root_host.start().close()
        _, server = root_host.resident()
        doomed, other = root_host.start(), root_host.start()
        tag = f"9{os.getpid()}{time.monotonic_ns() % 10000}"
        worker = background(lambda: doomed.task("/bin/sh", "-c", f"sleep {tag}; true", sandbox=None))
        assert wait_until(lambda: _pgrep(tag))
        (child,) = children(server) - {int(other.task("/bin/sh", "-c", "echo $PPID", sandbox=None).stdout)}
        os.kill(child, signal.SIGKILL)
        assert wait_until(lambda: not _pgrep(tag)), "the crashed run's task outlived it"
        worker.join(10)
        assert other.task("/bin/echo", "still").stdout == "still\n" and other.close() == 0
        assert root_host.resident()[1] == server and root_host.served()
        doomed.close()


class TestEnding:
    def test_it_exits_when_idle_and_the_clock_starts_when_the_last_run_ends(self, root_host: Host) -> None:
        first = root_host.start(persist=2)
        first.task("/bin/sleep", "3")  # longer than the idle time: the first run keeps it
        first.close()
        name, pid = root_host.resident()
        run = root_host.start(persist=2)
        assert run.resident
        run.task("/bin/sleep", "3", sandbox=None)  # so does a run it serves
        assert root_host.residents() == {name: pid}
        run.close()
        assert wait_until(lambda: not root_host.residents(), within_s=6), "still there after the idle time"
        assert sorted(p.name for p in root_host.run_dir.iterdir()) == [name + ".lock"]  # socket and key gone
        assert not root_host.served(persist=1)

    def test_stop_ends_it_and_lets_the_run_it_serves_finish(self, root_host: Host) -> None:
        root_host.start().close()
        name, pid = root_host.resident()
        run = root_host.start()
        result: list[ExecResult] = []
        worker = background(lambda: result.append(run.task("/bin/sh", "-c", "sleep 1; echo done")))
        time.sleep(0.3)
        assert root_host.stop() == [f"stopped {name}"]
        assert wait_until(lambda: start_time(pid) is None)
        worker.join(10)
        assert result[0].stdout == "done\n" and run.close() == 0
        assert root_host.stop() == []  # nothing left
        assert not root_host.served()

    def test_stop_removes_what_a_dead_one_left(self, root_host: Host) -> None:
        root_host.start().close()
        name, pid = root_host.resident()
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: start_time(pid) is None)
        assert root_host.stop() == [f"gone {name}"]
        assert sorted(p.name for p in root_host.run_dir.iterdir()) == [name + ".lock"]

    def test_a_new_bundle_starts_its_own_and_stops_the_old_one(self, root_host: Host,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """Code change: the socket is named by the bundle's hash, so a run of another bundle never
        reaches the old resident; it starts its own, which asks the old one to exit."""
        root_host.start().close()
        old, old_pid = root_host.resident()
        monkeypatch.setattr(bootstrap, "_MAIN", bootstrap._MAIN + "# another version\n")
        new_bundle = build_bundle()
        assert new_bundle.sha256 != root_host.bundle.sha256
        key = (root_host.run_dir / f"{old}.key").read_text().strip()
        refused = ask(root_host.run_dir / f"{old}.sock", f"{MARK} {PROTOCOL} run {key} {new_bundle.sha256} 60 - - 22 -",
                      (0, 1, 2))
        assert refused == "no hash"
        run = root_host.start(bundle=new_bundle)
        assert not run.resident and run.task("/bin/true").status is Status.OK
        run.close()
        assert wait_until(lambda: start_time(old_pid) is None), "the old bundle's resident is still running"
        new, _ = root_host.resident()
        assert new != old and new.startswith("a-" + new_bundle.sha256[:40])
        assert root_host.served(bundle=new_bundle)
        assert not root_host.served()  # and the old bundle's next run starts afresh

    def test_a_changed_copy_is_not_served_and_is_mended(self, root_host: Host) -> None:
        """The resident re-checks the unpacked copy before each run: a module edited under it (by
        something unsandboxed, as no task may write there) sends the run to a fresh start, which
        repairs the copy, and the resident that saw it exits."""
        root_host.start().close()
        _, pid = root_host.resident()
        module = root_host.cache / "sandfleet" / f"agent-{root_host.bundle.sha256}" / "sandfleet_agent" / "agent.py"
        with module.open("a") as out:
            out.write("\nraise SystemExit('planted')\n")
        run = root_host.start()
        assert run.ready[:1] == ("repaired",), run.ready
        assert run.task("/bin/true").status is Status.OK and run.close() == 0
        assert wait_until(lambda: start_time(pid) is None)
        assert "planted" not in module.read_text()
        assert wait_until(lambda: root_host.residents()), "no resident replaced it"
        assert root_host.served()

    def test_a_folder_others_can_enter_is_not_trusted(self, root_host: Host) -> None:
        root_host.start().close()
        root_host.resident()
        root_host.run_dir.chmod(0o755)
        run = root_host.start()
        assert not run.resident
        assert any("must be private" in w for w in run.hello.get("warnings", [])), run.hello
        run.close()

    def test_a_home_too_long_for_a_socket_address_works(self, tmp_path: Path) -> None:
        """sun_path holds 108 bytes: the server binds inside its folder, the stub connects through
        /proc/self/fd, so the home's length does not matter."""
        deep = tmp_path / ("d" * 100) / ("e" * 100)
        deep.mkdir(parents=True)
        (tmp_path / "ws").mkdir()
        host = Host(deep / "cache", tmp_path / "ws")
        try:
            host.start().close()
            assert len(str(host.run_dir / host.resident()[0])) > 200
            assert host.served()
        finally:
            host.kill_residents()


#: Each move a task could make against the resident, as a statement run by tests/modules/
#: test_escapes.py's PROBE style: the result is "OK" or the errno name (or the server's answer).
ATTACK = """
import errno, json, os, socket, struct, sys
run, name, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
def attempt(what, fn):
    try:
        out[what] = fn() or "OK"
    except OSError as exc:
        out[what] = errno.errorcode.get(exc.errno, str(exc))
def where():  # the socket's address, short whatever the folder's path (as the stub reaches it)
    return "/proc/self/fd/%d/%s.sock" % (os.open(run, os.O_PATH), name)
def talk(key):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(where())
    s.sendmsg([("%s %s run %s %s 60 - - 22 -\\n" % (MARK, PROTOCOL, key, SHA)).encode()],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])
    return s.recv(100).decode().strip() or "closed"
attempt("read_key", lambda: open(os.path.join(run, name + ".key")).read() and None)
attempt("list_dir", lambda: os.listdir(run) and None)
attempt("connect", lambda: socket.socket(socket.AF_UNIX).connect(where()))
attempt("guess_key", lambda: talk("0" * 64))
attempt("link_key", lambda: os.link(os.path.join(run, name + ".key"), "stolen-%d" % os.getpid()))
attempt("environ", lambda: open("/proc/%d/environ" % pid, "rb").read() and None)
attempt("fds", lambda: [os.readlink("/proc/%d/fd/%s" % (pid, n)) for n in os.listdir("/proc/%d/fd" % pid)] and None)
attempt("mem", lambda: open("/proc/%d/mem" % pid, "rb").close())
attempt("abstract", lambda: socket.socket(socket.AF_UNIX).connect("\\0" + name))
attempt("signal", lambda: os.kill(pid, 0))
print(json.dumps(out))
""".replace("MARK", repr(MARK)).replace("PROTOCOL", repr(PROTOCOL))


class TestWhoCanReachIt:
    def attack(self, run: Run, host: Host, sandbox: Optional[SandboxIntent]) -> dict[str, str]:
        name, pid = host.resident()
        result = run.task(PY, "-c", ATTACK.replace("SHA", repr(host.bundle.sha256)), str(host.run_dir), name,
                          str(pid), sandbox=sandbox)
        assert result.status is Status.OK, result
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    @pytest.mark.parametrize("backend", ["bwrap", "landlock"])
    def test_a_task_can_neither_reach_it_nor_read_its_key(self, user_host: Host, backend: str) -> None:
        """A task with the host's network (so UNIX sockets are allowed) under bwrap and under
        Landlock, against the unsandboxed process of the same user next to it. bwrap hides the
        state dir; Landlock lets ``connect()`` through (it does not mediate path sockets) but not
        the key, so the server answers a guessed key with ``no key`` and forks nothing."""
        status = probe().backend(backend)
        need(status is not None and status.available, f"{backend} unavailable")
        user_host.start(pin=backend).close()
        run = user_host.start(pin=backend)
        assert run.resident
        _, server = user_host.resident()
        assert children(server) == {int(run.task("/bin/sh", "-c", "echo $PPID", sandbox=None).stdout)}
        sandboxed = self.attack(run, user_host, NET_FULL)
        moves = ["read_key", "list_dir", "link_key", "environ", "fds", "mem"]
        moves += ["signal"] if backend == "bwrap" or probe().landlock_abi >= 6 else []  # ABI 6 scopes signals
        for move in moves:
            assert sandboxed[move] != "OK", (move, sandboxed)
        if backend == "bwrap":
            assert sandboxed["connect"] != "OK" and sandboxed["guess_key"] != "no key", sandboxed
        else:
            assert sandboxed["guess_key"] in ("no key", "EACCES", "EPERM"), sandboxed
        assert sandboxed["abstract"] == "ECONNREFUSED", sandboxed  # nothing listens there
        assert len(children(server)) == 1  # only the run itself: nothing was forked for the task
        bare = self.attack(run, user_host, None)  # last: it leaves the key linked into the workspace
        assert bare["read_key"] == bare["connect"] == bare["list_dir"] == bare["fds"] == bare["signal"] == "OK", bare
        assert bare["guess_key"] == "no key", bare
        assert run.task("/bin/echo", "ok").stdout == "ok\n" and run.close() == 0

    @pytest.mark.parametrize("backend", ["bwrap", "landlock"])
    def test_without_network_a_task_cannot_even_make_a_unix_socket(self, user_host: Host, backend: str) -> None:
        status = probe().backend(backend)
        need(status is not None and status.available, f"{backend} unavailable")
        user_host.start(pin=backend).close()
        run = user_host.start(pin=backend)
        out = self.attack(run, user_host, NET_NONE)
        assert out["connect"] == out["guess_key"] == out["abstract"] == "EPERM", out
        run.close()

    def test_another_user_cannot_connect(self, user_host: Host) -> None:
        """The folder is 0700: another user's process gets EACCES before any socket is reached;
        and the server itself refuses a peer of another uid (root, who can pass the folder and
        read the key) without reading a byte."""
        other = ensure_user(BECOME_USER)
        user_host.start().close()
        name, server = user_host.resident()
        sock = user_host.run_dir / f"{name}.sock"
        code = (f"import os, socket; socket.socket(socket.AF_UNIX).connect("
                f"'/proc/self/fd/%d/{sock.name}' % os.open({str(sock.parent)!r}, os.O_PATH))")
        tried = subprocess.run(["setpriv", f"--reuid={other.pw_uid}", f"--regid={other.pw_gid}", "--init-groups",
                                PY, "-c", code], capture_output=True, text=True)
        assert tried.returncode != 0 and "PermissionError" in tried.stderr, tried
        key = (user_host.run_dir / f"{name}.key").read_text().strip()
        assert ask(sock, f"{MARK} {PROTOCOL} stop {key}") == ""  # root, with the right key: closed unanswered
        assert user_host.residents() == {name: server}

    def test_garbage_and_wrong_keys_are_answered_and_fork_nothing(self, root_host: Host) -> None:
        root_host.start().close()
        name, server = root_host.resident()
        sock = root_host.run_dir / f"{name}.sock"
        assert ask(sock, "GET / HTTP/1.0") == "no bad-request"
        assert ask(sock, f"{MARK} {PROTOCOL} stop {'1' * 64}") == "no key"
        assert children(server) == set() and root_host.residents() == {name: server}


def background(fn: Callable[[], object]) -> threading.Thread:
    """``fn`` in a thread whose failure (a run its test kills) is the test's business, not a warning."""
    def quietly() -> None:
        with contextlib.suppress(Exception):
            fn()
    worker = threading.Thread(target=quietly)
    worker.start()
    return worker


def _pgrep(tag: str) -> bool:
    return subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode == 0


class TestPersistSetting:
    def write(self, tmp_path: Path, value: str) -> Path:
        path = tmp_path / "inv.yml"
        path.write_text(f"all:\n  hosts:\n    web:\n      sandfleet_agent_persist: {value}\n")
        return path

    @pytest.mark.parametrize(("value", "seconds"), [("10m", 600), ("30s", 30), ("1h", 3600), ("90", 90),
                                                   ("1.5m", 90), ("0", 0), ("false", 0), ("off", 0), ("24h", 86400)])
    def test_durations(self, tmp_path: Path, value: str, seconds: int) -> None:
        from sandfleet.api import load_inventory

        assert load_inventory(self.write(tmp_path, value)).host_config("web").agent_persist_s == seconds

    @pytest.mark.parametrize(("value", "said"), [("25h", "longer than the most allowed, 24h"),
                                                 ("10 minutes", "is not a duration"), ("true", "is not a duration"),
                                                 ("-5s", "is not a duration")])
    def test_mistakes_name_the_variable_and_the_line(self, tmp_path: Path, value: str, said: str) -> None:
        from sandfleet.api import load_inventory
        from sandfleet.errors import InputError

        with pytest.raises(InputError) as caught:
            load_inventory(self.write(tmp_path, value)).host_config("web")
        assert said in str(caught.value) and "sandfleet_agent_persist" in str(caught.value)
        assert caught.value.mark is not None and caught.value.mark.line == 4

    def test_the_cap_is_the_servers(self) -> None:
        from sandfleet.inventory.hostconfig import MAX_AGENT_PERSIST_S

        assert MAX_AGENT_PERSIST_S == MAX_PERSIST_S

