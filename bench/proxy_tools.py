"""Which tools honour the proxy variables a managed-network sandbox sets, checked rather than assumed.

Each installed tool runs once per scheme inside a real managed-network sandbox (bwrap, through the
executor) against ``web.tools.test``, which the resolve map points at a server on 127.0.0.5.
A tool *honours* the variables when the proxy recorded a decision for that name: it asked the
proxy instead of resolving the name itself (which fails inside the sandbox: there is no DNS).
Whether the request then succeeded is shown too (plain HTTP is served; the HTTPS target has no
TLS server behind it, so only the CONNECT is expected to happen). The column ``generic only``
runs the tool again with every tool-specific variable unset (``env -u npm_config_proxy ...``),
leaving only ``HTTP(S)_PROXY``/``ALL_PROXY`` and their lower-case forms: whether the tool needs
its own variable.

    python bench/proxy_tools.py
"""

from __future__ import annotations

import dataclasses
import http.server
import shutil
import socket
import sys
import tempfile
import threading
from typing import Any

from sandfleet_agent.binding.facts import probe
from sandfleet_agent.executor import execute
from sandfleet_agent.network.proxyenv import proxy_env
from sandfleet_agent.portable.intent import PROFILES, NetworkMode, NetworkPolicy, SandboxIntent
from sandfleet_agent.portable.policy import DEFAULT, Effective, parse_rule
from sandfleet_agent.portable.wire import ExecRequest, ExecResult

GENERIC = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY", "no_proxy"}
#: ``env -u`` for every variable but the generic ones (the marker stays: no tool reads it)
ONLY_GENERIC = ["env"] + [f"-u{name}" for name in proxy_env() if name not in GENERIC | {"SANDFLEET_NETWORK_PROXY"}]

HOST = "web.tools.test"


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.5", 0))
        return int(s.getsockname()[1])


def commands(http: str, https: str, scratch: str) -> list[tuple[str, str, list[str]]]:
    """(tool, scheme, argv); tools not installed are left out by the caller."""
    py = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read())"
    node = "fetch(process.argv[1]).then(r => r.text()).then(console.log, e => {console.error(e); process.exit(1)})"
    out = []
    for scheme, url in (("http", http), ("https", https)):
        out += [
            ("curl", scheme, ["curl", "-sS", "--max-time", "10", url]),
            ("wget", scheme, ["wget", "-q", "-O-", "--tries=1", "--timeout=10", url]),
            ("python3 urllib", scheme, ["python3", "-c", py, url]),
            ("pip", scheme, ["python3", "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                             "--retries", "0", "--timeout", "10", "-d", scratch, "--index-url", url + "simple/",
                             "--trusted-host", HOST, "sandfleet-probe"]),
            ("git", scheme, ["git", "ls-remote", url + "repo.git"]),
            ("npm", scheme, ["npm", "view", "--registry", url, "--fetch-retries=0", "--cache", scratch + "/npm",
                             "sandfleet-probe"]),
            ("node fetch", scheme, ["node", "-e", node, url]),
            ("yarn", scheme, ["yarn", "info", "--registry", url, "sandfleet-probe"]),
        ]
    return out


def main() -> int:
    facts = probe()
    status = facts.backend("bwrap")
    if status is None or not status.available:
        print(f"bwrap unavailable: {status.reason if status else 'not probed'}", file=sys.stderr)
        return 1
    scratch = tempfile.mkdtemp(prefix="sandfleet-tools-")
    facts = dataclasses.replace(facts, workspace_roots=(scratch,), tmpdir=scratch)
    server = http.server.ThreadingHTTPServer(("127.0.0.5", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    http_url = f"http://{HOST}:{server.server_address[1]}/"
    https_url = f"https://{HOST}:{free_port()}/"
    intent = SandboxIntent(PROFILES["workspace"], NetworkPolicy(NetworkMode.MANAGED, allow=("*.tools.test:*",)))
    policy = Effective((dataclasses.replace(DEFAULT, source="bench", network=NetworkMode.MANAGED,
                                            allow=(parse_rule("*.tools.test:*"),)),))
    print(f"{'tool':<16} {'scheme':<6} {'honours proxy vars':<19} {'generic only':<12} {'exit':>4}  decision")
    missing: list[str] = []

    def run(tool: str, argv: list[str]) -> tuple[ExecResult, bool]:
        result = execute(ExecRequest(id=tool, argv=tuple(argv), sandbox=intent, timeout_s=60, policy=policy,
                                     env={"HOME": scratch}), facts, resolve={HOST: "127.0.0.5"})
        return result, any(d.host == HOST for d in result.network_decisions)

    try:
        for tool, scheme, argv in commands(http_url, https_url, scratch):
            if shutil.which(argv[0]) is None:
                if tool not in missing:
                    missing.append(tool)
                continue
            result, honoured = run(tool, argv)
            _, generic = run(tool, ONLY_GENERIC + argv)
            seen = [d for d in result.network_decisions if d.host == HOST]
            errors = [line.strip() for line in result.stderr.splitlines() if "rror" in line or "ENOTFOUND" in line]
            last = (errors or result.stderr.strip().splitlines() or [""])[-1][:70]
            shown = f"{seen[0].decision} ({seen[0].reason})" if seen else last
            print(f"{tool:<16} {scheme:<6} {'yes' if honoured else 'NO':<19} {'yes' if generic else 'NO':<12} "
                  f"{result.rc!s:>4}  {shown}")
    finally:
        server.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    if missing:
        print(f"not installed here, so not checked: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
