"""Managed network end to end: the real executor, bwrap, the netns helper and the proxy, against
real servers on 127.0.0.x that the operator's resolve map names. No traffic leaves the machine:
every server is on loopback, and the sandbox has no route anywhere else."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandfleet_agent.binding.facts import HostFacts, probe
from sandfleet_agent.executor import execute
from sandfleet_agent.network import netproxy
from sandfleet_agent.portable.intent import PROFILES, NetworkMode, NetworkPolicy, SandboxIntent, Special
from sandfleet_agent.portable.policy import Effective
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status
from support.ci import need
from support.netservers import EchoServer, HttpServer, HttpsServer, UdpSink, make_tls
from support.policies import WIDE

PLAIN_IP, TLS_IP = "127.0.0.5", "127.0.0.6"
RESOLVE = {"allowed.test": PLAIN_IP, "www.allowed.test": PLAIN_IP, "tls.allowed.test": TLS_IP,
           "denied.allowed.test": PLAIN_IP, "other.test": PLAIN_IP}
POLICY = NetworkPolicy(NetworkMode.MANAGED, allow=("*.allowed.test:*",), deny=("denied.allowed.test",))

FETCH = """
import json, ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1]) if sys.argv[1] != "-" else None
out = {}
for url in sys.argv[2:]:
    try:
        out[url] = urllib.request.urlopen(url, timeout=10, context=ctx).read().decode()
    except urllib.error.HTTPError as exc:
        out[url] = exc.code
    except OSError as exc:
        out[url] = type(exc).__name__ + ": " + str(getattr(exc, "reason", exc))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def host_facts() -> HostFacts:
    facts = probe()
    status = facts.backend("bwrap")
    need(status is not None and status.available, f"bwrap unavailable: {status.reason if status else ''}")
    return facts


@pytest.fixture
def facts(host_facts: HostFacts, tmp_path: Path) -> HostFacts:
    ws, scratch = tmp_path / "ws", tmp_path / "scratch"
    ws.mkdir()
    scratch.mkdir()
    return dataclasses.replace(host_facts, workspace_roots=(str(ws),), tmpdir=str(scratch))


@dataclasses.dataclass
class Servers:
    plain: int
    tls: int
    echo: int
    ca: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    ca, cert, key = make_tls(tmp_path_factory.mktemp("tls"), ["tls.allowed.test"])
    with HttpServer(PLAIN_IP) as plain, HttpsServer(TLS_IP, cert, key) as tls, EchoServer(PLAIN_IP) as echo:
        yield Servers(plain.port, tls.port, echo.port, str(ca))


def intent(network: NetworkPolicy = POLICY) -> SandboxIntent:
    perms = tuple(p for p in PROFILES["workspace"] if p.path != Special("slash_tmp"))
    return SandboxIntent(perms, network)


def run(facts: HostFacts, *argv: str, network: NetworkPolicy = POLICY) -> ExecResult:
    return execute(ExecRequest(policy=WIDE, id="t", argv=argv, sandbox=intent(network), timeout_s=60), facts,
                   resolve=RESOLVE)


def decided(result: ExecResult) -> dict[tuple[str, int], tuple[str, str]]:
    return {(d.host, d.port): (d.decision, d.reason) for d in result.network_decisions}


class TestPython:
    def test_allowed_names_are_reached_others_refused(self, facts: HostFacts, servers: Servers) -> None:
        urls = [f"http://allowed.test:{servers.plain}/apex", f"http://www.allowed.test:{servers.plain}/sub",
                f"https://tls.allowed.test:{servers.tls}/tls",
                f"http://denied.allowed.test:{servers.plain}/", f"http://other.test:{servers.plain}/",
                f"http://{PLAIN_IP}:{servers.plain}/", f"https://other.test:{servers.tls}/"]
        r = run(facts, "python3", "-c", FETCH, servers.ca, *urls)
        assert r.status is Status.OK, r
        got = json.loads(r.stdout)
        assert json.loads(got[urls[0]])["path"] == "/apex"
        assert json.loads(got[urls[1]])["host"] == f"www.allowed.test:{servers.plain}"
        assert json.loads(got[urls[2]])["path"] == "/tls"  # TLS end to end through CONNECT
        assert [got[u] for u in urls[3:6]] == [403, 403, 403]
        assert "403" in got[urls[6]]  # CONNECT refused: urllib reports the tunnel failure
        assert decided(r) == {
            ("allowed.test", servers.plain): ("allow", "matches allow rule *.allowed.test:*"),
            ("www.allowed.test", servers.plain): ("allow", "matches allow rule *.allowed.test:*"),
            ("tls.allowed.test", servers.tls): ("allow", "matches allow rule *.allowed.test:*"),
            ("denied.allowed.test", servers.plain): ("deny", "matches deny rule denied.allowed.test"),
            ("other.test", servers.plain): ("deny", "not in the allow list"),
            (PLAIN_IP, servers.plain): ("deny", "IP address literal not in the allow list"),
            ("other.test", servers.tls): ("deny", "not in the allow list"),
        }
        assert r.wrapper[1:4] == ("-I", "-S", str(Path(netproxy.__file__).with_name("netns.py")))
        assert not any(Path(facts.tmpdir or "").iterdir()), "the hand-off socket's directory is removed"

    def test_direct_connections_have_no_route(self, facts: HostFacts, servers: Servers) -> None:
        script = (
            "import socket, sys\n"
            "print(open('/proc/net/dev').read().count(':') - 0, open('/proc/net/route').read().count('\\n'))\n"
            "try:\n"
            f"    socket.create_connection(('{PLAIN_IP}', {servers.plain}), timeout=3)\n"
            "    print('connected')\n"
            "except OSError as exc:\n"
            "    print(type(exc).__name__)\n"
        )
        r = run(facts, "python3", "-c", script)
        assert r.status is Status.OK, r
        interfaces, routes = r.stdout.split("\n")[0].split()
        assert interfaces == "1"  # lo only: nothing else exists to route through
        assert routes == "1"  # the header line of an empty routing table
        assert r.stdout.split("\n")[1] == "ConnectionRefusedError"  # 127.0.0.5 here is the sandbox's own lo
        assert r.network_decisions == ()

    def test_no_name_resolution_and_no_udp(self, facts: HostFacts) -> None:
        sink = UdpSink(PLAIN_IP)
        udp = ("import socket\n"
               "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
               "for _ in range(3):\n"
               f"    s.sendto(b'leak', ('{PLAIN_IP}', {sink.port}))\n"
               "print('sent')\n")
        try:
            script = (
                "import socket\n"
                "try:\n"
                "    socket.getaddrinfo('allowed.test', 80)\n"
                "    print('resolved')\n"
                "except OSError as exc:\n"
                "    print('no dns', type(exc).__name__)\n"
            ) + udp
            r = run(facts, "python3", "-c", script)
            assert r.status is Status.OK, r
            assert r.stdout == "no dns gaierror\nsent\n"  # sendto "succeeds" onto the sandbox's own lo
            assert sink.received() == 0
            # the control: the very same datagrams from a sandbox with network full do arrive
            full = run(facts, "python3", "-c", udp, network=NetworkPolicy(NetworkMode.FULL))
            assert full.status is Status.OK and sink.received() == 3, full
        finally:
            sink.close()


def proxy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sandfleet-proxy") and t.is_alive()]


class TestTeardown:
    def test_lingering_connections_do_not_outlive_the_task(self, facts: HostFacts, servers: Servers) -> None:
        """A background process holds one idle connection to the proxy and one open tunnel when
        the command exits: the task still ends at once, and so does every proxy thread."""
        hold = ("import socket, time\n"
                "idle = socket.create_connection(('127.0.0.1', 3128))\n"
                "tunnel = socket.create_connection(('127.0.0.1', 3128))\n"
                f"tunnel.sendall(b'CONNECT allowed.test:{servers.echo} HTTP/1.1\\r\\n\\r\\n')\n"
                "print(tunnel.recv(100).decode().splitlines()[0], flush=True)\n"
                "time.sleep(60)\n")
        script = ('python3 -c "$0" > "$1" 2>&1 &\n'
                  'for _ in $(seq 200); do [ -s "$1" ] && break; sleep 0.05; done; cat "$1"')
        assert proxy_threads() == []
        r = run(facts, "/bin/sh", "-c", script, hold, f"{facts.tmpdir}/out")
        assert r.status is Status.OK, r
        assert r.stdout == "HTTP/1.1 200 Connection established\n"
        assert r.duration_ms < 10_000
        assert decided(r) == {("allowed.test", servers.echo): ("allow", "matches allow rule *.allowed.test:*")}
        deadline = time.monotonic() + 3
        while proxy_threads() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy_threads() == []

    def test_a_client_that_sends_nothing_is_cut_off(self, facts: HostFacts, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(netproxy, "HEAD_TIMEOUT_S", 1.0)
        script = ("import socket, time\n"
                  "s = socket.create_connection(('127.0.0.1', 3128))\n"
                  "start = time.monotonic()\n"
                  "print(s.recv(100), time.monotonic() - start)\n")
        r = run(facts, "python3", "-c", script)
        assert r.status is Status.OK and r.stdout.startswith("b'' "), r  # closed, with no answer
        assert 0.8 < float(r.stdout.split()[1]) < 10
        assert r.network_decisions == ()


class TestCurl:
    @pytest.fixture(autouse=True)
    def _curl(self) -> None:
        need(shutil.which("curl") is not None, "curl is not installed")

    def test_http_https_and_socks(self, facts: HostFacts, servers: Servers) -> None:
        script = (
            f"curl -sS http://allowed.test:{servers.plain}/c1; echo;"
            f"curl -sS --cacert {servers.ca} https://tls.allowed.test:{servers.tls}/c2; echo;"
            f"curl -sS -o /dev/null -w '%{{http_code}}\\n' http://other.test:{servers.plain}/;"
            f"curl -sS --cacert {servers.ca} https://denied.allowed.test:{servers.tls}/ 2>&1; echo \"rc=$?\";"
            f"curl -sS -x socks5h://127.0.0.1:3128 http://www.allowed.test:{servers.plain}/c3; echo;"
            f"curl -sS -x socks5h://127.0.0.1:3128 http://other.test:{servers.plain}/ 2>&1; echo \"rc=$?\";"
            f"curl -sS --noproxy '*' --max-time 3 http://{PLAIN_IP}:{servers.plain}/ 2>&1; echo \"rc=$?\""
        )
        r = run(facts, "/bin/sh", "-c", script)
        assert r.status is Status.OK, r
        lines = r.stdout.splitlines()
        assert json.loads(lines[0])["path"] == "/c1", lines
        assert json.loads(lines[1])["path"] == "/c2"
        assert lines[2] == "403"
        assert "403" in lines[3] and lines[4] == "rc=56"  # CONNECT refused
        assert json.loads(lines[5])["path"] == "/c3"
        assert lines[-4].startswith("curl: (97)") and lines[-3] == "rc=97", lines  # SOCKS5 refusal
        assert lines[-2].startswith("curl: (7) Failed to connect to 127.0.0.5") and lines[-1] == "rc=7"  # direct
        decisions = decided(r)
        assert decisions[("tls.allowed.test", servers.tls)][0] == "allow"
        assert decisions[("denied.allowed.test", servers.tls)][0] == "deny"
        assert decisions[("other.test", servers.plain)] == ("deny", "not in the allow list")

    def test_connect_tunnel_carries_raw_bytes(self, facts: HostFacts, servers: Servers) -> None:
        r = run(facts, "/bin/sh", "-c",
                f"printf 'hello' | curl -sS --max-time 2 -p telnet://allowed.test:{servers.echo} 2>&1 || true")
        assert r.status is Status.OK, r
        assert "echo-server\nHELLO" in r.stdout, r.stdout  # curl then times out waiting: ignored


class TestFailClosed:
    def test_proxy_that_cannot_start_runs_nothing(self, facts: HostFacts, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        def no_dir(tmpdir: object) -> str:
            raise netproxy.ProxyUnavailable("no temp directory short enough for a Unix socket path")

        monkeypatch.setattr(netproxy, "socket_dir", no_dir)
        marker = tmp_path / "ws" / "ran"
        r = run(facts, "touch", str(marker))
        assert r.status is Status.SANDBOX_UNAVAILABLE
        assert r.message is not None and "proxy could not start" in r.message and "nothing ran" in r.message
        assert not marker.exists()

    def test_no_listener_handed_over_means_nothing_ran(self, facts: HostFacts, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(netproxy, "_is_our_child", lambda conn: False)
        marker = tmp_path / "ws" / "ran"
        r = run(facts, "touch", str(marker))
        assert r.status is Status.SANDBOX_UNAVAILABLE, r
        assert r.message is not None and "private network could not be set up" in r.message
        assert "did not accept the proxy listener" in r.message
        assert not marker.exists()

    def test_landlock_refuses_and_says_bwrap_is_needed(self, facts: HostFacts, tmp_path: Path) -> None:
        marker = tmp_path / "ws" / "ran"
        r = execute(ExecRequest(policy=WIDE, id="t", argv=("touch", str(marker)), sandbox=intent(), timeout_s=30),
                    facts, pin="landlock", resolve=RESOLVE)
        assert r.status is Status.SANDBOX_UNAVAILABLE
        assert r.message is not None and "a managed network needs bwrap" in r.message
        assert not marker.exists() and r.network_decisions == ()

    def test_no_bwrap_here_says_why_and_that_bwrap_is_needed(self, facts: HostFacts, tmp_path: Path) -> None:
        without = dataclasses.replace(facts, backends=tuple(
            dataclasses.replace(b, available=False, reason="bwrap is not installed") if b.name == "bwrap" else b
            for b in facts.backends))
        bwrap_only = Effective((dataclasses.replace(WIDE.operator, linux_backends=("bwrap",)),))
        r = execute(ExecRequest(policy=bwrap_only, id="t", argv=("true",), sandbox=intent(), timeout_s=30), without,
                    resolve=RESOLVE)
        assert r.status is Status.SANDBOX_UNAVAILABLE and r.message is not None
        assert "bwrap: bwrap is not installed" in r.message and "a managed network needs bwrap" in r.message
        assert "landlock" not in r.message.lower()  # never offered: it cannot hold a managed network


def test_network_none_and_full_are_unchanged(facts: HostFacts) -> None:
    none = run(facts, "/bin/true", network=NetworkPolicy(NetworkMode.NONE))
    assert none.status is Status.OK and "--unshare-net" in none.wrapper and none.wrapper[0].endswith("bwrap")
    full = run(facts, "/bin/true", network=NetworkPolicy(NetworkMode.FULL))
    assert full.status is Status.OK and "--unshare-net" not in full.wrapper and "--setenv" not in full.wrapper


def test_the_wrapper_shows_the_wiring(facts: HostFacts) -> None:
    r = run(facts, "/usr/bin/env")
    assert r.status is Status.OK, r
    bwrap = next(i for i, w in enumerate(r.wrapper) if w.endswith("bwrap"))
    assert r.wrapper[bwrap - 1] == "--" and r.wrapper[4:8] == ("--port", "3128", "--handoff", r.wrapper[7])
    assert "--unshare-net" not in r.wrapper  # the sandbox shares the helper's namespace and its listener
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env["http_proxy"] == env["HTTPS_PROXY"] == env["ALL_PROXY"] == env["PIP_PROXY"] == "http://127.0.0.1:3128"
    assert env["NO_PROXY"] == "localhost,127.0.0.1,::1" and env["npm_config_https_proxy"] == "http://127.0.0.1:3128"
