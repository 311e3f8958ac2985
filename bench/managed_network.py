"""What a managed network costs per task: wall time of one task through the real executor.

Why: every ``network: {allow: [...]}`` task gets its own proxy session and a netns helper
(one interpreter start) in front of bwrap, so its overhead over ``network: none`` decides whether
per-task proxies are affordable. Rows, each ``-n`` tasks of ``/bin/true`` unless said otherwise:

* bwrap, network none (the baseline: ``--unshare-net``);
* bwrap, managed network, nothing fetched (proxy session + netns helper + bwrap);
* the proxy session alone: start, hand-off socket, thread, close (no spawn);
* the netns helper alone, exec'ing ``/bin/true`` instead of bwrap (its share of the cost);
* managed network, one HTTP GET through the proxy to a server on 127.0.0.5 (curl), against the
  same curl with network full (the proxy's per-request share).

    python bench/managed_network.py [-n 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

from sandfleet_agent.binding.facts import HostFacts, probe
from sandfleet_agent.executor import execute
from sandfleet_agent.network import netns
from sandfleet_agent.network.netpolicy import HostPolicy
from sandfleet_agent.network.netproxy import ProxySession
from sandfleet_agent.portable.intent import PROFILES, NetworkMode, NetworkPolicy, SandboxIntent
from sandfleet_agent.portable.policy import DEFAULT, Effective, parse_rule
from sandfleet_agent.portable.wire import ExecRequest, Status

MANAGED = NetworkPolicy(NetworkMode.MANAGED, allow=("*.bench.test:*",))
#: The operator lets these tasks reach the bench's names (the built-in policy has no network).
POLICY = Effective((dataclasses.replace(DEFAULT, source="bench", network=NetworkMode.MANAGED,
                                        allow=(parse_rule("*.bench.test:*"),)),))


def measure(call: Callable[[], None], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def task(facts: HostFacts, network: NetworkPolicy, argv: Sequence[str]) -> Callable[[], None]:
    request = ExecRequest(id="b", argv=tuple(argv), sandbox=SandboxIntent(PROFILES["workspace"], network),
                          timeout_s=60, policy=POLICY)

    def call() -> None:
        result = execute(request, facts, pin="bwrap", resolve={"web.bench.test": "127.0.0.5"})
        if result.status is not Status.OK:
            raise SystemExit(f"task failed: {result.status.value}: {result.message}\n{result.stderr}")
    return call


def session_only(facts: HostFacts) -> None:
    ProxySession(HostPolicy(MANAGED.allow), {}, facts.tmpdir).start().close()


def helper_only(facts: HostFacts) -> Callable[[], None]:
    """The netns helper with a real hand-off, exec'ing /bin/true instead of bwrap."""
    def call() -> None:
        session = ProxySession(HostPolicy(MANAGED.allow), {}, facts.tmpdir).start()
        try:
            subprocess.run([sys.executable, "-I", "-S", os.path.abspath(netns.__file__), "--port", "3128",
                            "--handoff", session.endpoint.socket_path or "", "--", "/bin/true"], check=True)
        finally:
            session.close()
    return call


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="tasks per row (default 50)")
    n = parser.parse_args().n
    facts = probe()
    status = facts.backend("bwrap")
    if status is None or not status.available:
        print(f"bwrap unavailable: {status.reason if status else 'not probed'}", file=sys.stderr)
        return 1
    ws = tempfile.mkdtemp(prefix="sandfleet-bench-")
    server = http.server.ThreadingHTTPServer(("127.0.0.5", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://web.bench.test:{server.server_address[1]}/"
    direct = f"http://127.0.0.5:{server.server_address[1]}/"
    facts = dataclasses.replace(facts, workspace_roots=(ws,))
    rows: list[tuple[str, Callable[[], None]]] = [
        ("bwrap, network none: /bin/true", task(facts, NetworkPolicy(), ["/bin/true"])),
        ("bwrap, managed network: /bin/true", task(facts, MANAGED, ["/bin/true"])),
        ("proxy session alone (start + close)", lambda: session_only(facts)),
        ("netns helper alone (exec /bin/true)", helper_only(facts)),
    ]
    curl = shutil.which("curl")
    if curl:
        rows += [
            ("bwrap, network full: curl one GET", task(facts, NetworkPolicy(NetworkMode.FULL),
                                                       [curl, "-sS", "-o", "/dev/null", direct])),
            ("bwrap, managed network: curl one GET via proxy", task(facts, MANAGED, [curl, "-sS", "-o", "/dev/null",
                                                                                     url])),
        ]
    else:
        print("curl not installed: the GET rows are skipped", file=sys.stderr)
    print(f"{'row':<50} {'median ms':>10} {'p90 ms':>8}   (n={n}, {os.cpu_count()} cpus)")
    try:
        for name, call in rows:
            times = sorted(measure(call, n))
            print(f"{name:<50} {statistics.median(times):>10.1f} {times[int(len(times) * 0.9) - 1]:>8.1f}")
    finally:
        server.shutdown()
        shutil.rmtree(ws, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
