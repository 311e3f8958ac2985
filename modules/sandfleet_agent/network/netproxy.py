"""The host-side proxy of one managed-network task: the sandbox's only way out.

Lifecycle, per task (:class:`ProxySession`): the agent creates a private 0700 directory with a
Unix *hand-off* socket and starts one thread; the wrapper's first word (:mod:`.netns`) builds the
sandbox's network namespace, listens on ``127.0.0.1:3128`` inside it and passes that listening
socket here; from then on this thread accepts the sandbox's connections directly and serves each
on its own thread. When the task ends every connection is cut and the decisions go into the
task's result. Per task rather than one proxy per agent: a session costs a directory, a socket
and a thread (well under a millisecond, ``bench/managed_network.py``), needs no routing of
connections to the right task's policy, and cannot leak one task's allowance into the next.

Hosts without network namespaces (macOS: Seatbelt allows only ``localhost:PORT``) use the
``tcp`` form instead: the proxy listens on an ephemeral port of the host's loopback; any local
process could connect to it there, and would get no more than this task's allow list.

Only the agent's own child may hand a listener over: the peer's parent pid must be the agent
(``SO_PEERCRED``), so a concurrent sandbox of the same user that finds the socket cannot slip in
a listener of its own and borrow this task's allow list. The socket is unlinked as soon as the
listener arrives, before the sandboxed command starts.

Protocols, told apart by the first byte on the same port:

* HTTP ``CONNECT host:port`` → ``200`` then a byte tunnel (TLS stays end to end: no MITM, so
  the name checked is the one in CONNECT, never the SNI or an inner ``Host``);
* HTTP absolute-URI requests (``GET http://host[:port]/path``) → forwarded as origin-form with
  every client ``Host`` header replaced by one from the URL (so a mismatched ``Host`` cannot front
  for another site) and ``Connection: close``; a head with a control character (a bare CR or LF
  that a lenient server would read as a line break, NUL, ...) gets ``400``; ``https://`` URIs and
  other schemes get ``501`` (use CONNECT). What the client sends after the head still goes to the
  same server, as through a CONNECT tunnel to it: a decision is about a destination
  ``host:port``, never about single requests (that would take TLS interception);
* SOCKS5 ``CONNECT`` (no authentication; domain, IPv4 and IPv6 address types); ``BIND`` and
  ``UDP ASSOCIATE`` are refused: the sandbox gets no UDP at all.

An allowed name is allowed on every port (:mod:`.netpolicy`: rules carry no port). A client has
``HEAD_TIMEOUT_S`` in all for its request head or SOCKS handshake, then it is cut off; a tunnel
lives until either side closes or the task ends, when :meth:`ProxySession.close` cuts it.

Every answer is recorded (:class:`Recorder`): denied (``403`` / SOCKS ``0x02``), allowed, or
allowed but unreachable (``502`` / SOCKS ``0x04``/``0x05``). Names are resolved here, on the host,
and only when allowed (the operator's map first, then the system resolver); a denied name is never
looked up. Every address is checked by :func:`.netpolicy.destination_problem` before connecting.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import ipaddress
import os
import re
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Optional

from sandfleet_agent.backends.base import ProxyEndpoint
from sandfleet_agent.network.netpolicy import (
    HostPolicy,
    InvalidHost,
    IpAddress,
    Verdict,
    destination_problem,
    parse_authority,
    shown_raw,
)
from sandfleet_agent.network.proxyenv import SANDBOX_PROXY_PORT
from sandfleet_agent.portable.wire import NetworkDecision

SOCKET_NAME = "proxy.sock"
HEAD_LIMIT = 64 * 1024  # bytes of request line + headers
HEAD_TIMEOUT_S = 30.0  # for the whole request head or SOCKS handshake, not per read: a client that
                       # sends nothing, or one byte at a time, is cut off after this long
CONNECT_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 256  # open at once per task
MAX_DECISIONS = 500  # distinct entries kept per task
_SUN_PATH_MAX = 107
_CONTROL_IN_LINE = re.compile(r"[\x00-\x1f\x7f]")  # request line: no CR, LF, NUL, tab ...
_CONTROL_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # header lines: tab only
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "host",
                          "te", "upgrade"})


class ProxyUnavailable(Exception):
    """The proxy could not be started: the task must not run."""


class Recorder:
    """Thread-safe, de-duplicated list of decisions in the order first seen, capped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int, str, str], int] = {}
        self.dropped = 0

    def record(self, host: str, port: int, decision: str, reason: str) -> None:
        key = (host, port, decision, reason)
        with self._lock:
            if key in self._counts:
                self._counts[key] += 1
            elif len(self._counts) < MAX_DECISIONS:
                self._counts[key] = 1
            else:
                self.dropped += 1

    def decisions(self) -> tuple[NetworkDecision, ...]:
        with self._lock:
            return tuple(NetworkDecision(h, p, d, r, n) for (h, p, d, r), n in self._counts.items())


def socket_dir(tmpdir: Optional[str]) -> str:
    """A fresh private directory for the hand-off socket, short enough for ``sun_path``."""
    for base in (tmpdir, "/tmp", tempfile.gettempdir()):
        if base and os.path.isdir(base) and len(os.path.join(base, "sfnet-XXXXXXXX", SOCKET_NAME)) <= _SUN_PATH_MAX:
            return tempfile.mkdtemp(prefix="sfnet-", dir=base)
    raise ProxyUnavailable("no temp directory short enough for a Unix socket path")


def nominal_endpoint(tmpdir: Optional[str], os_name: str = "linux") -> ProxyEndpoint:
    """What a dry-run shows: on Linux the real port and a hand-off socket of the shape a run
    creates; elsewhere the port stands for the ephemeral one a run picks."""
    if os_name != "linux":
        return ProxyEndpoint(SANDBOX_PROXY_PORT)
    return ProxyEndpoint(SANDBOX_PROXY_PORT, os.path.join(tmpdir or "/tmp", "sfnet-XXXXXXXX", SOCKET_NAME))


class ProxySession:
    """The proxy for one task; :meth:`start` it before the spawn, :meth:`close` it after."""

    def __init__(self, policy: HostPolicy, resolve: Optional[Mapping[str, str]] = None,
                 tmpdir: Optional[str] = None, *, tcp: bool = False) -> None:
        self.policy = policy
        self.tcp = tcp
        self.resolve = dict(resolve or {})
        self.recorder = Recorder()
        self._tmpdir = tmpdir
        self._dir: Optional[str] = None
        self._control: Optional[socket.socket] = None
        self._listener: Optional[socket.socket] = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: Optional[threading.Thread] = None
        self._handed_off = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.endpoint = ProxyEndpoint(SANDBOX_PROXY_PORT)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ProxySession:
        """Listen for the hand-off (or, with ``tcp``, on a loopback port of the host itself, for
        backends that confine the command to ``localhost:PORT`` instead of a namespace)."""
        try:
            self._wake_r, self._wake_w = os.pipe()
            if self.tcp:
                self._listener = socket.create_server(("127.0.0.1", 0))
                endpoint = ProxyEndpoint(self._listener.getsockname()[1])
                self._handed_off.set()
            else:
                self._dir = socket_dir(self._tmpdir)
                path = os.path.join(self._dir, SOCKET_NAME)
                self._control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._control.bind(path)
                self._control.listen(4)
                endpoint = ProxyEndpoint(SANDBOX_PROXY_PORT, path)
            self._thread = threading.Thread(target=self._serve, name="sandfleet-proxy", daemon=True)
            self._thread.start()
        except (OSError, ProxyUnavailable) as exc:
            self.close()
            raise ProxyUnavailable(f"the host-side proxy could not start: {exc}") from None
        self.endpoint = endpoint
        return self

    @property
    def handed_off(self) -> bool:
        """Whether the sandbox's listener arrived, i.e. the wrapper got past its network set-up."""
        return self._handed_off.is_set()

    def close(self) -> tuple[NetworkDecision, ...]:
        """Stop serving, cut every connection, remove the socket; the decisions made."""
        self._stopping = True
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        with self._lock:
            for conn in list(self._open):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5.0)
        for sock in (self._listener, self._control):
            if sock is not None:
                sock.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        return self.recorder.decisions()

    # -- the serving thread ------------------------------------------------------------------

    def _wait(self, sock: socket.socket) -> bool:
        """Block until ``sock`` is readable (True) or the session stops (False)."""
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                ready = {key.fd for key, _ in sel.select()}
                if ready:
                    return self._wake_r not in ready
        return False

    def _serve(self) -> None:
        listener = self._listener
        if listener is None:
            try:
                listener = self._receive_listener()
            except OSError:
                return
            if listener is None:
                return
            self._listener = listener
            self._handed_off.set()
        while self._wait(listener):
            try:
                client, _ = listener.accept()
            except OSError:
                time.sleep(0.05)  # out of descriptors, say: do not spin on a listener that stays readable
                continue
            with self._lock:  # checked under the lock: close() sets _stopping, then cuts what is open
                if self._stopping or len(self._open) >= MAX_CONNECTIONS:
                    client.close()
                    continue
                self._open.add(client)
            threading.Thread(target=self.handle, args=(client,), name="sandfleet-proxy-conn", daemon=True).start()

    def _receive_listener(self) -> Optional[socket.socket]:
        control = self._control
        assert control is not None
        while self._wait(control):
            conn, _ = control.accept()
            with conn:
                if not _is_our_child(conn):
                    continue
                conn.settimeout(10.0)
                listener = _receive_fd(conn)
                if listener is None:
                    continue
                conn.sendall(b"K")
            control.close()
            self._control = None
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._dir or "", SOCKET_NAME))
            return listener
        return None

    # -- one client connection ---------------------------------------------------------------

    def handle(self, client: socket.socket) -> None:
        """Serve one client connection to the end, then close it (the accept loop runs this on a
        thread per connection; tests call it on one end of a socket pair)."""
        upstream: Optional[socket.socket] = None
        deadline = time.monotonic() + HEAD_TIMEOUT_S
        try:
            _until(client, deadline)
            first = client.recv(1, socket.MSG_PEEK)
            if first == b"\x05":
                upstream = self._socks5(client, deadline)
            elif first:
                upstream = self._http(client, deadline)
            if upstream is not None:
                with self._lock:
                    self._open.add(upstream)
                if self._stopping:
                    return
                client.settimeout(None)
                upstream.settimeout(None)
                _relay(client, upstream)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._open.discard(client)
                if upstream is not None:
                    self._open.discard(upstream)
            client.close()
            if upstream is not None:
                upstream.close()

    def _decide(self, verdict: Verdict) -> tuple[Optional[socket.socket], Verdict]:
        """Record the verdict and, when allowed, connect. Returns the upstream socket (None when
        refused or unreachable) and the verdict as finally decided: an allowed destination whose
        every address the policy refuses (:func:`.netpolicy.destination_problem`) is denied."""
        if not verdict.allowed or verdict.target is None:
            self.recorder.record(verdict.host, verdict.port, "deny", verdict.reason)
            return None, verdict
        upstream, problem, blocked = self._connect(verdict)
        if blocked:
            verdict = dataclasses.replace(verdict, allowed=False, reason=problem)
            self.recorder.record(verdict.host, verdict.port, "deny", verdict.reason)
            return None, verdict
        reason = verdict.reason if upstream is not None else f"{verdict.reason}; unreachable: {problem}"
        self.recorder.record(verdict.host, verdict.port, "allow", reason)
        return upstream, verdict

    def _upstream_for(self, client: socket.socket, authority: str, default_port: Optional[int],
                      what: str) -> Optional[socket.socket]:
        """The upstream for an HTTP request's ``host:port``, or None once the client has been
        told why not (a malformed authority: 400; a refused or unreachable one: its verdict)."""
        try:
            host, port = parse_authority(authority, default_port)
        except InvalidHost as exc:
            self.recorder.record(shown_raw(authority), 0, "deny", f"invalid destination: {exc}")
            _answer(client, 400, f"{what}: {exc}")
            return None
        upstream, verdict = self._decide(self.policy.decide(host, port))
        if upstream is None:
            _refuse(client, verdict)
        return upstream

    def _connect(self, verdict: Verdict) -> tuple[Optional[socket.socket], str, bool]:
        """(socket, problem, blocked): ``blocked`` when every address was refused by policy."""
        target = verdict.target
        assert target is not None
        addresses: list[IpAddress]
        from_operator = False
        if target.address is not None:
            addresses = [target.address]
        elif target.name in self.resolve:
            addresses, from_operator = [ipaddress.ip_address(self.resolve[target.name])], True
        else:
            try:
                infos = socket.getaddrinfo(target.name, verdict.port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                return None, f"cannot resolve {target.name}: {exc}", False
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        problems: list[str] = []
        allowed = [a for a in addresses if not _note(destination_problem(a, from_operator), problems)]
        if not allowed:
            return None, problems[0] if problems else "no address", True
        error = ""
        for address in allowed:
            try:
                return socket.create_connection((str(address), verdict.port), timeout=CONNECT_TIMEOUT_S), "", False
            except OSError as exc:
                error = f"{address}: {exc.strerror or exc}"
        return None, error, False

    # -- HTTP --------------------------------------------------------------------------------

    def _http(self, client: socket.socket, deadline: float) -> Optional[socket.socket]:
        head, rest = _read_head(client, deadline)
        if head is None:
            _answer(client, 400, "request head too large or incomplete")
            return None
        lines = head.decode("latin-1").split("\r\n")
        if _CONTROL_IN_LINE.search(lines[0]) or any(_CONTROL_IN_HEADER.search(line) for line in lines[1:]):
            # a bare CR or LF is a line break to some servers: it could add a second Host header
            _answer(client, 400, "control character in the request head")
            return None
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
            _answer(client, 400, "malformed request line")
            return None
        method, target, version = parts
        headers = _headers(lines[1:])
        if headers is None:
            _answer(client, 400, "malformed header")
            return None
        if method.upper() == "CONNECT":
            upstream = self._upstream_for(client, target, None, "bad CONNECT target")
            if upstream is None:
                return None
            client.sendall(f"{version} 200 Connection established\r\n\r\n".encode("ascii"))
            if rest:
                upstream.sendall(rest)
            return upstream
        scheme, sep, after = target.partition("://")
        if not sep:
            _answer(client, 400, "this is a proxy: send an absolute http:// URL or CONNECT host:port")
            return None
        if scheme.lower() != "http":
            _answer(client, 501, f"{scheme}:// is not forwarded; use CONNECT for https")
            return None
        cut = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
        authority, path = after[:cut].rpartition("@")[2], after[cut:].split("#", 1)[0]
        path = path if path.startswith("/") else "/" + path
        upstream = self._upstream_for(client, authority, 80, "bad URL authority")
        if upstream is None:
            return None
        out = [f"{method} {path} {version}", f"Host: {authority}"]
        out += [f"{name}: {value}" for name, value in headers if name.lower() not in _HOP_HEADERS]
        out.append("Connection: close")
        upstream.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + rest)
        return upstream

    # -- SOCKS5 ------------------------------------------------------------------------------

    def _socks5(self, client: socket.socket, deadline: float) -> Optional[socket.socket]:
        def recv(n: int) -> bytes:
            return _recv_exact(client, n, deadline)

        _, count = recv(2)
        if 0 not in recv(count):
            client.sendall(b"\x05\xff")
            return None
        client.sendall(b"\x05\x00")
        _, command, _, kind = recv(4)
        if kind == 1:
            host = socket.inet_ntop(socket.AF_INET, recv(4))
        elif kind == 4:
            host = f"[{socket.inet_ntop(socket.AF_INET6, recv(16))}]"
        elif kind == 3:
            host = recv(recv(1)[0]).decode("latin-1")
        else:
            client.sendall(_socks_reply(8))
            return None
        port = struct.unpack("!H", recv(2))[0]
        if command != 1:
            self.recorder.record(shown_raw(host), port, "deny", f"SOCKS5 command {command} is not supported "
                                 "(only CONNECT: no UDP, no BIND)")
            client.sendall(_socks_reply(7))
            return None
        upstream, verdict = self._decide(self.policy.decide(host, port))
        client.sendall(_socks_reply(0 if upstream is not None else 4 if verdict.allowed else 2))
        return upstream


# -- helpers ---------------------------------------------------------------------------------

def _note(problem: Optional[str], problems: list[str]) -> bool:
    if problem:
        problems.append(problem)
    return problem is not None


def _is_our_child(conn: socket.socket) -> bool:
    """The peer is a direct child of this process (the wrapper's netns helper), same user."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    if uid != os.geteuid():
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2:].split()
    return len(fields) > 1 and fields[1] == str(os.getpid()).encode()


def _receive_fd(conn: socket.socket) -> Optional[socket.socket]:
    """The one listening TCP socket the helper sent, or None (anything else sent is closed)."""
    size = struct.calcsize("i")
    msg, ancillary, flags, _ = conn.recvmsg(1, socket.CMSG_SPACE(4 * size))
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % size])
    if msg != b"L" or len(fds) != 1 or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        return None
    sock = socket.socket(fileno=fds[0])
    if (sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM
            or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
        sock.close()
        return None
    return sock


def _until(sock: socket.socket, deadline: float) -> None:
    """Let the next blocking call on ``sock`` wait only until ``deadline`` (``socket.timeout`` after)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("the request head or handshake took too long")
    sock.settimeout(left)


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        _until(sock, deadline)
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("connection closed mid-message")
        data += chunk
    return data


def _read_head(sock: socket.socket, deadline: float) -> tuple[Optional[bytes], bytes]:
    """The request head (without the blank line) and whatever followed it, or (None, b"")."""
    buf = b""
    while True:
        end = buf.find(b"\r\n\r\n")
        if 0 <= end <= HEAD_LIMIT:
            return buf[:end], buf[end + 4:]
        if len(buf) > HEAD_LIMIT:
            return None, b""
        _until(sock, deadline)
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk


def _headers(lines: list[str]) -> Optional[list[tuple[str, str]]]:
    out: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[:1] in (" ", "\t"):
            return None  # obsolete line folding, or no colon: refuse rather than guess
        out.append((name, value.strip()))
    return out


def _answer(client: socket.socket, status: int, text: str) -> None:
    phrase = {400: "Bad Request", 403: "Forbidden", 501: "Not Implemented", 502: "Bad Gateway"}[status]
    body = f"sandfleet proxy: {text}\n".encode("ascii", "replace")
    client.sendall(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                   f"X-Sandfleet-Proxy: {'denied' if status == 403 else 'error'}\r\nConnection: close\r\n\r\n"
                   .encode("ascii") + body)


def _refuse(client: socket.socket, verdict: Verdict) -> None:
    if not verdict.allowed:
        _answer(client, 403, f"{verdict.host}:{verdict.port} is not allowed ({verdict.reason})")
    else:
        _answer(client, 502, f"{verdict.host}:{verdict.port} is allowed but could not be reached")


def _socks_reply(code: int) -> bytes:
    return bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0])


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both directions reached end of file (half-closes passed on)."""
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        while sel.get_map():
            for key, _ in sel.select():
                src, dst = key.fileobj, key.data
                assert isinstance(src, socket.socket)
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if data:
                    dst.sendall(data)
                    continue
                sel.unregister(src)
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
