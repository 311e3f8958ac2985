"""The proxy's protocols and lifecycle, in process: a client on one end of a socket pair, the
proxy's connection handler on the other, real servers on 127.0.0.x behind it. (The sandbox end
to end, with bwrap and the netns helper, is test_managed_network.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandfleet_agent.network import netproxy
from sandfleet_agent.network.netpolicy import HostPolicy
from sandfleet_agent.network.netproxy import ProxySession, Recorder
from support.netservers import EchoServer, HttpServer

SERVER_IP = "127.0.0.7"
RESOLVE = {"allowed.test": SERVER_IP, "www.allowed.test": SERVER_IP, "evil.test": SERVER_IP,
           "down.allowed.test": "127.0.0.8"}


@pytest.fixture
def session() -> Iterator[ProxySession]:
    proxy = ProxySession(HostPolicy(["*.allowed.test:*", "localhost:*", "127.0.0.7:*"], ["evil.allowed.test"]), RESOLVE)
    yield proxy
    proxy.close()


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    with HttpServer(SERVER_IP) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with EchoServer(SERVER_IP) as server:
        yield server  # type: ignore[misc]


def connect(session: ProxySession) -> socket.socket:
    """A client socket whose other end the proxy serves on a thread."""
    client, served = socket.socketpair()
    client.settimeout(10)
    threading.Thread(target=session.handle, args=(served,), daemon=True).start()
    return client


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def http(session: ProxySession, request: bytes) -> tuple[str, dict[str, str], bytes]:
    with connect(session) as client:
        client.sendall(request)
        head, _, body = read_all(client).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def decisions(session: ProxySession) -> list[tuple[str, int, str, str]]:
    return [(d.host, d.port, d.decision, d.reason) for d in session.recorder.decisions()]


class TestPlainHttp:
    def test_allowed_absolute_uri_is_forwarded_in_origin_form(self, session: ProxySession,
                                                              http_server: HttpServer) -> None:
        port = http_server.port
        status, _, body = http(session, (
            f"GET http://www.allowed.test:{port}/a/b?q=1#frag HTTP/1.1\r\nHost: ignored.example\r\n"
            "Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n").encode())
        assert status == "HTTP/1.0 200 OK"
        seen = json.loads(body)
        assert seen["path"] == "/a/b?q=1"
        assert seen["host"] == f"www.allowed.test:{port}"  # from the URL: a Host header cannot front for another
        assert seen["headers"]["X-Kept"] == "yes" and seen["headers"]["Connection"] == "close"
        assert not any(h.lower().startswith("proxy-") for h in seen["headers"])
        assert decisions(session) == [("www.allowed.test", port, "allow", "matches allow rule *.allowed.test:*")]

    def test_default_port_and_empty_path(self, session: ProxySession) -> None:
        status, _, _ = http(session, b"GET http://down.allowed.test HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 502 Bad Gateway"
        ((host, port, decision, reason),) = decisions(session)
        assert (host, port, decision) == ("down.allowed.test", 80, "allow") and "unreachable: 127.0.0.8" in reason

    def test_denied_gets_403_and_is_recorded(self, session: ProxySession, http_server: HttpServer) -> None:
        status, headers, body = http(session, f"GET http://evil.allowed.test:{http_server.port}/ HTTP/1.1\r\n\r\n"
                                     .encode())
        assert status == "HTTP/1.1 403 Forbidden" and headers["X-Sandfleet-Proxy"] == "denied"
        assert b"matches deny rule evil.allowed.test" in body
        assert decisions(session) == [("evil.allowed.test", http_server.port, "deny",
                                       "matches deny rule evil.allowed.test")]

    def test_userinfo_cannot_smuggle_another_host(self, session: ProxySession, http_server: HttpServer) -> None:
        status, _, _ = http(session, f"GET http://allowed.test@evil.test:{http_server.port}/ HTTP/1.1\r\n\r\n"
                            .encode())
        assert status == "HTTP/1.1 403 Forbidden"
        assert decisions(session)[0][:3] == ("evil.test", http_server.port, "deny")

    @pytest.mark.parametrize(("request_line", "status"), [
        (b"GET /only/a/path HTTP/1.1\r\n\r\n", "400"),
        (b"GET https://allowed.test/ HTTP/1.1\r\n\r\n", "501"),
        (b"GET ftp://allowed.test/ HTTP/1.1\r\n\r\n", "501"),
        (b"GET http://allowed.test/ HTTP/2\r\n\r\n", "400"),
        (b"GET  http://allowed.test/ HTTP/1.1\r\n\r\n", "400"),
        (b"GET http://allowed.test/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", "400"),
        (b"GET http://allowed.test/ HTTP/1.1\r\nno colon\r\n\r\n", "400"),
        (b"GET http://allowed.test:http/ HTTP/1.1\r\n\r\n", "400"),
        (b"GET http://allowed.test/ HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n", "400"),
        (b"GET http://allowed.test/ HTTP/1.1\r\nX: a\nHost: evil.test\r\n\r\n", "400"),
        (b"GET http://allowed.test/ HTTP/1.1\r\nX: a\rHost: evil.test\r\n\r\n", "400"),
        (b"GET http://allowed.test/a\nHost:evil.test HTTP/1.1\r\n\r\n", "400"),
        (b"GET http://allowed.test/a\x00b HTTP/1.1\r\n\r\n", "400"),
        (b"GET http://allowed.test/a\tb HTTP/1.1\r\n\r\n", "400"),
        (b"CONNECT allowed.test:443\n HTTP/1.1\r\n\r\n", "400"),
    ], ids=["origin-form", "https-uri", "ftp-uri", "http2", "double-space", "folded", "no-colon", "named-port",
            "huge-head", "bare-lf-header", "bare-cr-header", "lf-in-target", "nul-in-target", "tab-in-target",
            "lf-in-connect"])
    def test_malformed_or_unsupported_requests(self, session: ProxySession, request_line: bytes, status: str) -> None:
        line, _, _ = http(session, request_line)
        assert line.split(" ")[1] == status
        assert all(d[2] == "deny" for d in decisions(session))  # nothing was connected to

    def test_forwarded_head_is_exactly_rebuilt(self, session: ProxySession, echo_server: EchoServer) -> None:
        """Every Host header the client sent is dropped, whatever its spelling, and one Host from
        the URL takes its place; proxy and hop-by-hop headers go; the rest passes unchanged. The
        echo server sends back (upper-cased) the exact bytes that reached it."""
        port = echo_server.port
        client = connect(session)
        client.sendall(f"GET http://allowed.test:{port}/p?q HTTP/1.1\r\nHost: evil.test\r\nhOST: evil2.test\r\n"
                       "Proxy-Authorization: x\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n".encode())
        seen = b""
        while not seen.endswith(b"\r\n\r\n"):
            chunk = client.recv(4096)
            assert chunk, seen
            seen += chunk
        client.close()
        assert seen == (f"echo-server\nGET /P?Q HTTP/1.1\r\nHOST: ALLOWED.TEST:{port}\r\nX-A: 1\r\n"
                        "CONNECTION: CLOSE\r\n\r\n").encode()


class TestConnect:
    def test_allowed_tunnel_carries_bytes_both_ways(self, session: ProxySession, echo_server: EchoServer) -> None:
        client = connect(session)
        client.sendall(f"CONNECT allowed.test:{echo_server.port} HTTP/1.1\r\nHost: x\r\n\r\nearly".encode())
        reply = b""
        while b"echo-server\n" not in reply:
            reply += client.recv(4096)
        client.sendall(b" data")
        while b"EARLY DATA" not in reply:  # the bytes sent with the CONNECT were forwarded too
            reply += client.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200 Connection established\r\n\r\necho-server\n")
        client.close()

    def test_denied_and_unlisted(self, session: ProxySession, echo_server: EchoServer) -> None:
        for host in ("evil.allowed.test", "evil.test", "127.0.0.9"):
            status, _, _ = http(session, f"CONNECT {host}:{echo_server.port} HTTP/1.1\r\n\r\n".encode())
            assert status == "HTTP/1.1 403 Forbidden", host
        assert [d[3] for d in decisions(session)] == [
            "matches deny rule evil.allowed.test", "not in the allow list", "IP address literal not in the allow list"]

    def test_connect_needs_host_and_port(self, session: ProxySession) -> None:
        status, _, _ = http(session, b"CONNECT allowed.test HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 400 Bad Request"
        assert decisions(session)[0][2:] == ("deny", "invalid destination: a port is required (host:port)")

    def test_listed_private_literal_and_names_resolving_inward_are_refused(self, session: ProxySession,
                                                                           echo_server: EchoServer) -> None:
        """``127.0.0.7`` and ``localhost`` are on the allow list, but a playbook alone cannot open
        the host's loopback: only the operator's resolve map can point somewhere private."""
        for host in ("127.0.0.7", "localhost"):
            status, _, body = http(session, f"CONNECT {host}:{echo_server.port} HTTP/1.1\r\n\r\n".encode())
            assert status == "HTTP/1.1 403 Forbidden", host
            assert b"not a public address" in body
        assert all(d[2] == "deny" and "sandfleet_network_resolve" in d[3] for d in decisions(session))


def socks(session: ProxySession, greeting: bytes, request: bytes) -> tuple[socket.socket, bytes, bytes]:
    client = connect(session)
    client.sendall(greeting)
    method = client.recv(2)
    if method != b"\x05\x00":
        return client, method, b""
    client.sendall(request)
    reply = b""
    while len(reply) < 10:
        chunk = client.recv(10 - len(reply))
        if not chunk:
            break
        reply += chunk
    return client, method, reply


def socks_domain(name: bytes, port: int, command: int = 1) -> bytes:
    return bytes([5, command, 0, 3, len(name)]) + name + struct.pack("!H", port)


class TestSocks5:
    def test_allowed_domain_tunnel(self, session: ProxySession, echo_server: EchoServer) -> None:
        client, _, reply = socks(session, b"\x05\x01\x00", socks_domain(b"allowed.test", echo_server.port))
        assert reply[:2] == b"\x05\x00"
        assert client.recv(64) == b"echo-server\n"
        client.sendall(b"abc")
        assert client.recv(64) == b"ABC"
        client.close()
        assert decisions(session) == [
            ("allowed.test", echo_server.port, "allow", "matches allow rule *.allowed.test:*")]

    @pytest.mark.parametrize(("request_bytes", "code", "reason"), [
        (socks_domain(b"evil.test", 443), 2, "not in the allow list"),
        (bytes([5, 1, 0, 1, 127, 0, 0, 9]) + struct.pack("!H", 443), 2, "IP address literal not in the allow list"),
        (bytes([5, 1, 0, 4]) + socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("!H", 443), 2,
         "IP address literal not in the allow list"),
        (socks_domain("bücher.allowed.test".encode(), 443), 2, "invalid destination: not an ASCII host name"),
        (socks_domain(b"allowed.test", 53, command=3), 7, "SOCKS5 command 3 is not supported"),
        (socks_domain(b"allowed.test", 53, command=2), 7, "SOCKS5 command 2 is not supported"),
    ])
    def test_refusals(self, session: ProxySession, request_bytes: bytes, code: int, reason: str) -> None:
        client, _, reply = socks(session, b"\x05\x01\x00", request_bytes)
        client.close()
        assert reply[:2] == bytes([5, code])
        assert decisions(session)[0][2] == "deny" and decisions(session)[0][3].startswith(reason)

    def test_authentication_only_clients_are_turned_away(self, session: ProxySession) -> None:
        client, method, _ = socks(session, b"\x05\x01\x02", b"")
        client.close()
        assert method == b"\x05\xff"


class TestSlowClients:
    """A client that sends nothing, or drips its request head a byte at a time, is cut off once
    the head deadline has passed (``HEAD_TIMEOUT_S`` for the whole head, not per read)."""

    @pytest.fixture(autouse=True)
    def _short_deadline(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(netproxy, "HEAD_TIMEOUT_S", 0.5)

    @pytest.mark.parametrize("opening", [b"", b"GET http://allowed.test/ HTTP/1.1\r\n", b"\x05\x01"],
                             ids=["silent", "half-a-head", "half-a-socks-greeting"])
    def test_stalled_client_is_closed(self, session: ProxySession, opening: bytes) -> None:
        with connect(session) as client:
            client.sendall(opening)
            start = time.monotonic()
            assert read_all(client) == b""  # closed without an answer
            assert 0.3 < time.monotonic() - start < 10
        assert decisions(session) == []

    def test_dripping_client_is_closed_at_the_deadline(self, session: ProxySession) -> None:
        client = connect(session)
        client.setblocking(True)
        start, sent = time.monotonic(), 0
        with contextlib.suppress(OSError):
            for byte in b"GET http://allowed.test/ HTTP/1.1\r\nX: " + b"a" * 300:
                client.send(bytes([byte]))
                sent += 1
                time.sleep(0.05)
        elapsed = time.monotonic() - start
        assert sent < 200 and elapsed < 10, (sent, elapsed)  # each read was quick, yet the head was cut off
        client.close()


class TestLifecycle:
    def test_socket_lives_in_a_private_directory_and_is_removed(self, tmp_path: Path) -> None:
        proxy = ProxySession(HostPolicy([]), tmpdir=str(tmp_path)).start()
        assert proxy.endpoint.port == 3128 and proxy.endpoint.socket_path
        path = Path(proxy.endpoint.socket_path)
        assert path.parent.parent == tmp_path and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert proxy.close() == () and not path.parent.exists()
        assert not proxy.handed_off

    def test_only_the_agents_own_child_may_hand_a_listener_over(self, tmp_path: Path) -> None:
        """This test process is not its own child: its listener is turned away and the socket stays."""
        proxy = ProxySession(HostPolicy([]), tmpdir=str(tmp_path)).start()
        try:
            listener = socket.create_server(("127.0.0.1", 0))
            control = socket.socket(socket.AF_UNIX)
            control.settimeout(5)
            control.connect(proxy.endpoint.socket_path or "")
            # turned away on connect (broken pipe) or with our message unread (reset), never acknowledged
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                control.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", listener.fileno()))])
                assert control.recv(1) == b""  # closed without the acknowledgement
            assert not proxy.handed_off and os.path.exists(proxy.endpoint.socket_path or "")
            listener.close()
            control.close()
        finally:
            proxy.close()

    def test_unusable_temp_dir_falls_back_and_long_paths_are_avoided(self, tmp_path: Path) -> None:
        deep = tmp_path / ("d" * 100)
        deep.mkdir()
        proxy = ProxySession(HostPolicy([]), tmpdir=str(deep)).start()
        assert len(proxy.endpoint.socket_path or "") <= 107 and str(deep) not in (proxy.endpoint.socket_path or "")
        proxy.close()

    def test_start_failure_is_proxy_unavailable(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        def no_dir(tmpdir: object) -> str:
            raise netproxy.ProxyUnavailable("no temp directory short enough for a Unix socket path")

        monkeypatch.setattr(netproxy, "socket_dir", no_dir)
        with pytest.raises(netproxy.ProxyUnavailable, match="could not start"):
            ProxySession(HostPolicy([])).start()


def test_recorder_counts_repeats_and_caps_distinct_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netproxy, "MAX_DECISIONS", 3)
    rec = Recorder()
    for _ in range(3):
        rec.record("a.test", 443, "allow", "r")
    for i in range(5):
        rec.record(f"h{i}.test", 443, "deny", "r")
    got = rec.decisions()
    assert [(d.host, d.count) for d in got] == [("a.test", 3), ("h0.test", 1), ("h1.test", 1)]
    assert rec.dropped == 3


def proxy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sandfleet-proxy") and t.is_alive()]


def test_close_cuts_every_connection_and_ends_every_thread(echo_server: EchoServer) -> None:
    """Torn down after the task: a silent client, a client half-way through its head, an open
    CONNECT tunnel and a SOCKS5 tunnel all see end of file, the port stops listening and none of
    the proxy's threads outlives close()."""
    assert proxy_threads() == []
    proxy = ProxySession(HostPolicy(["*.allowed.test:*"]), RESOLVE, tcp=True).start()
    port = proxy.endpoint.port
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    clients[1].sendall(b"GET http://allowed.test/ HTTP/1.1\r\n")
    clients[2].sendall(f"CONNECT allowed.test:{echo_server.port} HTTP/1.1\r\n\r\n".encode())
    clients[3].sendall(b"\x05\x01\x00" + socks_domain(b"www.allowed.test", echo_server.port))
    for tunnel, expected in ((clients[2], b"200 Connection established"), (clients[3], b"echo-server\n")):
        got = b""
        while b"echo-server\n" not in got:
            got += tunnel.recv(4096)
        assert expected in got
    start = time.monotonic()
    assert [d.decision for d in proxy.close()] == ["allow", "allow"]
    for client in clients:
        assert read_all(client) == b""
        client.close()
    assert time.monotonic() - start < 10
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    deadline = time.monotonic() + 3
    while proxy_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy_threads() == []


def test_tcp_form_serves_on_a_host_loopback_port(http_server: HttpServer) -> None:
    """For hosts without network namespaces (Seatbelt confines the command to localhost:PORT)."""
    proxy = ProxySession(HostPolicy(["*.allowed.test:*"]), RESOLVE, tcp=True).start()
    try:
        assert proxy.handed_off and proxy.endpoint.socket_path is None and proxy.endpoint.port != 3128
        with socket.create_connection(("127.0.0.1", proxy.endpoint.port), timeout=10) as client:
            client.sendall(f"GET http://allowed.test:{http_server.port}/tcp HTTP/1.1\r\n\r\n".encode())
            assert json.loads(read_all(client).partition(b"\r\n\r\n")[2])["path"] == "/tcp"
    finally:
        decisions_made = proxy.close()
    assert [d.decision for d in decisions_made] == ["allow"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.endpoint.port), timeout=2).close()
