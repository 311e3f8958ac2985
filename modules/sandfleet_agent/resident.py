"""The resident agent: one warm process per host, user, bundle and interpreter that serves later
runs, so they skip the agent's start (opt-in: ``sandfleet_agent_persist``; docs/resident-agent.md).

The bootstrap stub (``sandfleet/transports/bootstrap.py``) starts it and is its only client. A
run that finds none is served as always, by the stub's own process, which also calls
:func:`detach`: a fork of that process, its imports done, becomes a daemon (own session, stdio on
``/dev/null``) listening on ``a-<sha[:40]>-<crc32 of interpreter and machine>.sock`` in
``~/.cache/sandfleet/run``.
That folder is private (0700, this user's) and inside the agent's state dir, which every task's
sandbox is denied; the socket is a path, never abstract (Landlock's filesystem rules do not cover
abstract sockets, and a task with the host's network shares their namespace). A later run's stub
reaches it with one request line and hands over its three descriptors (the SSH channel's stdin,
stdout and stderr: ``SCM_RIGHTS``) and its init line; the server forks a child that serves that
run exactly as :func:`sandfleet_agent.agent.main` does in a fresh process (its own subreaper,
keyring, sandbox pool and orphan kills), on those descriptors, so no run shares another's state
and a crash takes one run only. The stub waits for the child's end and exits with its code.

Who may ask (checked by this process before anything is forked, each connection):

- the peer's uid (``SO_PEERCRED``) is this process's; others are closed unread;
- the first line names the key in ``a-….key`` (0600, 32 random bytes per server start, compared
  in constant time): a sandboxed task of the same user may reach the socket (Landlock does not
  mediate ``connect()`` to a path socket) but cannot read that file, which its sandbox denies;
- at most :data:`MAX_PENDING` connections wait for their line, each for :data:`AUTH_S` seconds.

Requests, one line (``SANDFLEET-RESIDENT 1 VERB KEY ...``; ``stop`` must stay readable by every
later version: ``sandfleet agent stop`` sends it to residents of any version)::

    run KEY SHA PERSIST INIT CWD UMASK ENV   + fds 0, 1, 2   → ok | no WHY; then go ← ; exit N →
    stop KEY                                                  → stopped

``INIT``, ``CWD``, ``ENV`` (NUL-separated ``k=v``) are base64, ``-`` when empty: the child takes
the run's environment, working directory and umask, as a fresh agent would inherit them. Before
forking, the server checks that the unpacked bundle is still the one verified (the server has
imported all of it, but a changed copy is what the user must hear of, as the stub's check says at
every start): each file's inode, size, mtime and ctime as recorded when the server started and the
stub's full check passed (a change to a file changes its ctime, which no process of the user can
set back); only when they differ is the full check run again. A changed copy answers ``no
changed`` and stops the server, and the stub falls back to a fresh start, which mends it.

How it ends: no run for ``PERSIST`` seconds after the last one ended (the latest run's value,
at most :data:`MAX_PERSIST_S`); a ``stop`` request; a run of another bundle starting its own
resident (it stops the others, ``stop_others``); a changed copy; ``SIGTERM``. Runs in progress
finish in their own processes.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, NoReturn, Optional

from sandfleet_agent import spawn

MARK = "SANDFLEET-RESIDENT"
PROTOCOL = "1"
AUTH_S = 5.0  # how long a connection may take to send its request line
MAX_PENDING = 32  # connections that have not sent it yet; more are closed at once
MAX_LINE = 1 << 20  # an environment is rarely more than a few KiB
#: The longest idle time a run may ask for: a resident a forgotten fleet left behind is gone within
#: a day, and so is the memory image of the run that started it (docs/resident-agent.md).
MAX_PERSIST_S = 24 * 3600
LOCK_WAIT_S = 2.0  # how long a new server waits for a stopping one of the same name
#: The agent's caches at the top of its unpacked copy, which the stub's check leaves out too.
CACHES = ("template-cache", "render-memo", "dataclass-cache", "facts-cache")
_SIZEOF_INT = struct.calcsize("i")
_first_runs: list[int] = []  # the stub's end of the pipe that tells the server its first run ended


def unavailable(run_dir: str) -> Optional[str]:
    """Why no resident agent may live in ``run_dir`` on this host, None when one may: Linux only
    (peer credentials), and the folder must be this user's alone (made 0700 when missing)."""
    if not hasattr(socket, "SO_PEERCRED") or not hasattr(os, "O_PATH"):
        return "a resident agent needs Linux (peer credentials on UNIX sockets)"
    old = os.umask(0o077)
    try:
        os.makedirs(run_dir, exist_ok=True)
        fd = os.open(run_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        return f"cannot make {run_dir}: {exc.strerror or exc}"
    finally:
        os.umask(old)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return (f"{run_dir} must be private to this user (owner uid {os.geteuid()}, mode 0700), but it is "
                f"owned by uid {st.st_uid} with mode {st.st_mode & 0o7777:04o}")
    return None


def detach(run_dir: str, name: str, sha: str, root: str, persist_s: int, check: Callable[[], str],
           stop_others: Callable[[str], object]) -> list[str]:
    """Start the resident server for this bundle beside the run this process serves, and return
    at once: what the user should be told (why there is none), else nothing. ``check`` is the
    stub's test of the unpacked copy ("" when intact), ``stop_others`` its client asking every
    resident of another bundle to exit. The server is a fork of this process, so it holds every
    module already imported, from the copy the stub verified a moment ago."""
    why = unavailable(run_dir)
    if why is not None:
        return [f"sandfleet_agent_persist: {why}; no resident agent was started"]
    first_r, first_w = os.pipe()  # the server sees EOF when this process, the first run, is over
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forks' side is tested through real stubs
        try:
            os.close(first_w)
            os.setsid()
            if os.fork() == 0:
                _daemon(Server(run_dir, name, sha, root, persist_s, check, first_r), stop_others)
        finally:
            os._exit(0)
    os.close(first_r)
    os.waitpid(pid, 0)
    _first_runs.append(first_w)  # held open (not inherited: close-on-exec) until this process exits
    return []


def _daemon(server: Server, stop_others: Callable[[str], object]) -> NoReturn:  # pragma: no cover - a fork
    """The grandchild: detached from the run's descriptors and signals, then the server's life."""
    code = 0
    try:
        server.snapshot = _snapshot(server.root)
        if server.check():  # after the snapshot: what changes later shows in it
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, server.first_run)
        os.closerange(server.first_run + 1, 1 << 16)
        for sig in (signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        os.chdir(server.run_dir)
        os.umask(0o077)
        spawn.harden_agent()  # subreaper: what a crashed run leaves is reparented here and killed
        if server.bind():
            stop_others(server.sha)
            _preload(server.root)
            os.environ.clear()  # the first run's: each run brings its own
            server.serve()
    except BaseException:  # nowhere to report: the daemon's stderr is /dev/null
        code = 1
    finally:
        server.close()
    os._exit(code)


def _preload(root: str) -> None:  # pragma: no cover - in the daemon
    """Import every module of the bundle now, from the copy the stub has just verified: no run
    pays for a lazy import (Jinja2 alone is ~17 ms), and none reads code from the cache folder
    later. A module this host cannot import stays for the run that needs it to fail on."""
    import importlib

    for top in ("sandfleet_agent", "jinja2", "markupsafe"):
        base = os.path.join(root, top)
        for folder, _dirs, files in sorted(os.walk(base)):
            package = os.path.relpath(folder, root).replace(os.sep, ".")
            for file in sorted(f for f in files if f.endswith(".py")):
                module = package if file == "__init__.py" else f"{package}.{file[:-3]}"
                with contextlib.suppress(Exception):
                    importlib.import_module(module)
    for name in ("pwd", "resource", "pickle", "getpass"):  # the standard library's, used lazily by runs
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # the persistent sandbox's init, read and kept marshalled
        from sandfleet_agent.linux import sandbox_pool

        sandbox_pool._init_code()


@dataclass
class _Pending:
    """A connection that has not yet sent its request line."""

    sock: socket.socket
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    fds: list[int] = field(default_factory=list)

    def drop(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        self.sock.close()


@dataclass
class Request:
    """One request line, parsed; ``run`` fields empty for ``stop``."""

    verb: str
    key: str
    sha: str = ""
    persist_s: int = 0
    init: bytes = b""
    cwd: bytes = b""
    umask: int = 0o022
    env: dict[bytes, bytes] = field(default_factory=dict)

    @classmethod
    def parse(cls, line: bytes) -> Request:
        """Raises ``ValueError`` for anything but a well-formed request of this protocol."""
        words = line.decode("ascii").split()
        if len(words) < 4 or words[0] != MARK or words[1] != PROTOCOL:
            raise ValueError("not a resident request")
        verb, key = words[2], words[3]
        if verb == "stop" and len(words) == 4:
            return cls(verb, key)
        if verb != "run" or len(words) != 10:
            raise ValueError(f"unknown request {verb!r}")
        env = {}
        for item in _unb64(words[9]).split(b"\0"):
            name, sep, value = item.partition(b"=")
            if sep and name:
                env[name] = value
        return cls(verb, key, words[4], int(words[5]), _unb64(words[6]), _unb64(words[7]), int(words[8], 8), env)


def _unb64(word: str) -> bytes:
    return b"" if word == "-" else base64.b64decode(word, validate=True)


class Server:
    """The resident's accept loop; every run is served by a fork of it (:meth:`_serve_run`)."""

    def __init__(self, run_dir: str, name: str, sha: str, root: str, persist_s: int, check: Callable[[], str],
                 first_run: int) -> None:
        self.run_dir, self.name, self.sha, self.root = run_dir, name, sha, root
        self.persist_s = min(max(persist_s, 1), MAX_PERSIST_S)
        self.check, self.first_run = check, first_run
        self.snapshot: frozenset[tuple[str, int, int, int, int]] = frozenset()
        self.key = ""
        self.lock = -1
        self.listener: Optional[socket.socket] = None
        self.children: set[int] = set()
        self.pending: dict[int, _Pending] = {}
        self.idle_since = time.monotonic()
        self.stopping = False
        self._selector: Optional[selectors.BaseSelector] = None
        self._wake_r = self._wake_w = -1

    # --- start and end --------------------------------------------------------------------

    def bind(self) -> bool:
        """Take this name's lock (a stopping server of the same name may hold it a moment), write a
        fresh key, listen. False when another live server has the name: this one is not needed."""
        self.lock = os.open(self.name + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        os.ftruncate(self.lock, 0)
        os.write(self.lock, f"{os.getpid()}\n".encode())  # which process holds the name, for people
        self.key = os.urandom(32).hex()
        tmp = f"{self.name}.key.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.key + "\n")
        os.replace(tmp, self.name + ".key")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name + ".sock")  # a dead server's (we hold the name's lock)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.name + ".sock")  # relative: the cwd is run_dir, so no path-length limit
        listener.listen(64)
        listener.setblocking(False)
        self.listener = listener
        return True

    def close(self) -> None:
        """Forget the name (socket, key) if it is still ours, then release it."""
        if self.listener is not None:
            self.listener.close()
            for suffix in (".sock", ".key"):
                with contextlib.suppress(OSError):
                    os.unlink(self.name + suffix)
        for pending in self.pending.values():
            pending.drop()
        if self.lock >= 0:
            os.close(self.lock)

    # --- the loop -------------------------------------------------------------------------

    def serve(self) -> None:
        assert self.listener is not None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the select
        signal.signal(signal.SIGTERM, self._stop_signal)
        selector = self._selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "listen")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        selector.register(self.first_run, selectors.EVENT_READ, "first")
        while not self.stopping:
            self._reap()
            now = time.monotonic()
            busy = self.children or self.pending or self.first_run >= 0
            if not busy and now - self.idle_since >= self.persist_s:
                break
            timeout = min([p.deadline for p in self.pending.values()] + [now + 3600.0]) - now
            if not busy:
                timeout = min(timeout, self.idle_since + self.persist_s - now)
            for key, _ in selector.select(max(timeout, 0.0)):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 512)
                elif key.data == "first":
                    selector.unregister(self.first_run)
                    os.close(self.first_run)
                    self.first_run, self.idle_since = -1, time.monotonic()
                else:
                    self._read(key.data)
            for fd in [fd for fd, p in self.pending.items() if p.deadline <= time.monotonic()]:
                self._forget(fd)

    def _stop_signal(self, *_: object) -> None:
        self.stopping = True

    def _accept(self) -> None:
        assert self.listener is not None and self._selector is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        if uid != os.geteuid() or len(self.pending) >= MAX_PENDING:
            conn.close()  # another user, or a flood: nothing is read, nothing forked
            return
        conn.setblocking(False)
        self.pending[conn.fileno()] = _Pending(conn, time.monotonic() + AUTH_S)
        self._selector.register(conn, selectors.EVENT_READ, conn.fileno())

    def _forget(self, fd: int) -> Optional[_Pending]:
        pending = self.pending.pop(fd, None)
        if pending is not None and self._selector is not None:
            self._selector.unregister(pending.sock)
            pending.drop()
        return pending

    def _read(self, fd: int) -> None:
        pending = self.pending[fd]
        try:
            data, ancillary, _flags, _ = pending.sock.recvmsg(1 << 16, socket.CMSG_SPACE(3 * _SIZEOF_INT),
                                                             socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                count = len(payload) // _SIZEOF_INT
                pending.fds.extend(struct.unpack(f"{count}i", payload[:count * _SIZEOF_INT]))
        pending.data += data
        if not data or len(pending.data) > MAX_LINE or len(pending.fds) > 3:
            self._forget(fd)
        elif b"\n" in pending.data:
            self.pending.pop(fd)
            assert self._selector is not None
            self._selector.unregister(pending.sock)
            try:
                self._answer(pending, bytes(pending.data.split(b"\n", 1)[0]))
            finally:
                pending.drop()

    def _answer(self, pending: _Pending, line: bytes) -> None:
        try:
            request = Request.parse(line)
        except (ValueError, UnicodeDecodeError):
            _reply(pending.sock, "no bad-request")
            return
        if not _same(request.key, self.key):
            _reply(pending.sock, "no key")
            return
        if request.verb == "stop":
            _reply(pending.sock, "stopped")
            self.stopping = True
            return
        if request.sha != self.sha or len(pending.fds) != 3:  # the name says the hash; so must the request
            _reply(pending.sock, "no hash" if request.sha != self.sha else "no descriptors")
            return
        if not self._verified():
            _reply(pending.sock, "no changed")
            self.stopping = True
            return
        self.persist_s = min(max(request.persist_s, 1), MAX_PERSIST_S)  # the latest run's wish
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a fork: tested through real stubs
            code = 70
            try:
                code = self._serve_run(pending, request)
            except BaseException:  # the run's stderr is fd 2 by now, or nowhere
                traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.children.add(pid)

    def _reap(self) -> None:
        """Collect ended runs (and whatever a crashed one left, reparented here: killed)."""
        ended = False
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.children:
                self.children.discard(pid)
                ended = True
        if ended:
            spawn.kill_orphans(self.children)
            if not self.children:
                self.idle_since = time.monotonic()

    def _verified(self) -> bool:
        """Whether the copy on disk is still the one verified (~0.3 ms); when anything differs
        from the record, the stub's full check decides (~4 ms), and a copy that passes is recorded
        anew (another interpreter's bytecode added beside this one's, say)."""
        now = _snapshot(self.root)
        if now == self.snapshot:
            return True
        if self.check():
            return False
        self.snapshot = now  # taken before the check: a change after it shows next time
        return True

    # --- one run, in its own process --------------------------------------------------------

    def _serve_run(self, pending: _Pending, request: Request) -> int:  # pragma: no cover - a fork
        """The child: drop the server's descriptors and signals, take the run's descriptors and
        surroundings, then be the agent for this one run."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self._selector is not None:
            self._selector.close()
        for fd in (self._wake_r, self._wake_w, self.lock, self.first_run):
            if fd >= 0:
                os.close(fd)
        if self.listener is not None:
            self.listener.close()  # this process's copy only: the parent keeps listening
            self.listener = None
        for other in self.pending.values():
            other.drop()
        conn, fds = pending.sock, list(pending.fds)
        pending.fds.clear()
        conn.setblocking(True)
        conn.settimeout(AUTH_S)
        _reply(conn, "ok")
        if _line(conn) != b"go":
            return 0  # the stub gave up waiting and serves the run itself
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environb.update(request.env)
        with contextlib.suppress(OSError):
            os.chdir(request.cwd or os.environ.get("HOME", "/"))
        os.umask(request.umask)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(_Ahead(request.init)), encoding="utf-8", newline="\n")
        version = ".".join(map(str, sys.version_info[:3]))
        os.write(1, f"SANDFLEET-BOOTSTRAP ready resident {version}\n".encode())
        conn.settimeout(None)
        from sandfleet_agent.agent import main

        code = main(self.root)
        with contextlib.suppress(OSError):
            conn.sendall(f"exit {code}\n".encode())
        return code


def _snapshot(root: str) -> frozenset[tuple[str, int, int, int, int]]:
    """Every file and folder of the unpacked copy (the agent's caches at its top left out, as
    the stub's check does) with its inode, size, mtime and ctime: what any change alters."""
    found: set[tuple[str, int, int, int, int]] = set()
    todo = [""]
    while todo:
        top = todo.pop()
        with os.scandir(os.path.join(root, top)) as entries:
            for entry in entries:
                name = top + entry.name
                st = entry.stat(follow_symlinks=False)
                found.add((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
                if entry.is_dir(follow_symlinks=False) and name not in CACHES:
                    todo.append(name + "/")
    return frozenset(found)


def _same(given: str, key: str) -> bool:
    import hmac

    return bool(key) and hmac.compare_digest(given.encode(), key.encode())


def _reply(sock: socket.socket, text: str) -> None:
    with contextlib.suppress(OSError):
        sock.setblocking(True)
        sock.settimeout(1.0)
        sock.sendall(text.encode() + b"\n")


def _line(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while not data.endswith(b"\n") and len(data) < 64:
            chunk = sock.recv(64)
            if not chunk:
                break
            data += chunk
    return data.strip()


class _Ahead(io.RawIOBase):
    """fd 0 as the agent reads it, after the init line the stub passed on (``fileno()`` stays 0:
    the agent watches it for a cancel), as the stub's own ``Ahead``."""

    def __init__(self, first: bytes) -> None:
        self._first = first

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 0

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._first:
            data, self._first = self._first[:len(buffer)], self._first[len(buffer):]
        else:
            data = os.read(0, len(buffer))
        buffer[:len(data)] = data
        return len(data)
