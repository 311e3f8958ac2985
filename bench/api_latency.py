"""Per-command latency of an open fleet: the Python API, ``sandfleet serve`` and a bare paramiko agent.

Why: a harness that keeps a fleet open (``open_fleet`` → ``Fleet.run``, or ``sandfleet serve``
from another language) pays per command, not per run: this measures what one command costs
end to end on an open fleet, against the thinnest thing one could write (bench/compare.py's bare
agent: one paramiko connection and one remote ``python3`` per host, one JSON line each way,
TCP_NODELAY, no sandbox). Needs root and /usr/sbin/sshd: each host is its own sshd on loopback
with throw-away keys (tests/support/sshd.py), stopped by PID at the end.

    python bench/api_latency.py [--hosts 20] [--commands 50]

A command is ``true`` on every host (sandfleet: the default sandbox, bwrap with its persistent
sandbox; the bare agent: no sandbox), timed from sending it until every host's result is in. The
first command of each path (connections, agents and, on the first path, the agent zip's upload)
is shown apart and left out of the figures. Rows: ``open_fleet`` + ``Fleet.run`` in this process;
``sandfleet serve`` (a JSON-RPC ``run`` written to its stdin, read until the response); the bare
agent (each command written to every host's channel, then every reply read).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from compare import BARE_AGENT, _sh_quote  # noqa: E402 - found through the path set just above

from sandfleet_agent.portable.policy import DEFAULT_PROTECTED  # noqa: E402
from support.sshd import USER, Fleet, SshHost, missing_reason  # noqa: E402

Timings = tuple[float, list[float]]  # the first command, then the others (seconds)


def timed(commands: int, one: Callable[[], None]) -> Timings:
    samples = []
    for _ in range(commands + 1):
        start = time.perf_counter()
        one()
        samples.append(time.perf_counter() - start)
    return samples[0], samples[1:]


def check(records: list[dict[str, Any]], hosts: int, what: str) -> None:
    bad = [r for r in records if r["status"] != "ok" or r["backend"] != "bwrap"]
    if len(records) != hosts or bad:
        raise SystemExit(f"{what}: {len(records)} results of {hosts}, wrong: {bad[:1]}")


def api_path(inventory: Path, ssh_config: Path, hosts: int, commands: int) -> Timings:
    import sandfleet

    with sandfleet.open_fleet(inventory, ssh_config=str(ssh_config), forks=hosts) as fleet:
        def one() -> None:
            result = fleet.run(["true"])
            check([t.to_json() for h in result.hosts.values() for t in h.tasks], hosts, "open_fleet")

        return timed(commands, one)


def serve_path(inventory: Path, ssh_config: Path, hosts: int, commands: int) -> Timings:
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet", "serve", "-i", str(inventory), "--ssh-config",
                             str(ssh_config), "-f", str(hosts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=ROOT)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    count = 0

    def one() -> None:
        nonlocal count
        count += 1
        stdin.write(json.dumps({"jsonrpc": "2.0", "id": count, "method": "run",
                                "params": {"argv": ["true"]}}).encode() + b"\n")
        stdin.flush()
        while True:
            message = json.loads(stdout.readline())
            if message.get("id") == count:
                break
        if "result" not in message:
            raise SystemExit(f"serve: {message}")
        check([t for h in message["result"]["hosts"] for t in h["tasks"]], hosts, "serve")

    try:
        return timed(commands, one)
    finally:
        stdin.close()
        proc.wait(timeout=60)
        stdout.close()


def bare_path(fleet: Fleet, hosts: list[SshHost], known_hosts: Path, commands: int) -> Timings:
    import paramiko

    key = paramiko.PKey.from_path(str(fleet.client_key))
    channels = []
    clients = []

    def connect() -> None:
        for host in hosts:
            sock = socket.create_connection((host.address, host.port), timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = paramiko.SSHClient()
            client.load_host_keys(str(known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(host.address, host.port, USER, pkey=key, sock=sock, allow_agent=False, look_for_keys=False)
            stdin, stdout, _ = client.exec_command("python3 -c " + _sh_quote(BARE_AGENT))
            clients.append(client)
            channels.append((stdin, stdout))

    def one() -> None:
        if not channels:
            connect()
        for stdin, _ in channels:
            stdin.write(json.dumps(["true"]) + "\n")
            stdin.flush()
        for _, stdout in channels:
            if json.loads(stdout.readline()) != {"rc": 0, "out": ""}:
                raise SystemExit("bare agent: wrong answer")

    try:
        return timed(commands, one)
    finally:
        for stdin, _ in channels:
            stdin.close()
        for client in clients:
            client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--commands", type=int, default=50)
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    fleet = Fleet()
    try:
        hosts = [fleet.spawn(log_level="ERROR") for _ in range(args.hosts)]
        work = fleet.base / "controller"
        work.mkdir()
        known = fleet.known_hosts(work / "known_hosts", hosts)
        ssh_config = fleet.ssh_config(work / "ssh_config", known)
        inventory = fleet.inventory(work / "inventory.yml", hosts)
        for ws in (h.workspace for h in hosts):  # present, so every command renders the same wrapper
            for name in DEFAULT_PROTECTED:
                (ws / name).mkdir(exist_ok=True)
        rows = {
            "open_fleet + Fleet.run (in process)": api_path(inventory, ssh_config, args.hosts, args.commands),
            "sandfleet serve (JSON-RPC on a pipe)": serve_path(inventory, ssh_config, args.hosts, args.commands),
            "bare paramiko agent, no sandbox": bare_path(fleet, hosts, known, args.commands),
        }
    finally:
        fleet.cleanup()
    print(f"{args.hosts} hosts, `true` on every host per command, {args.commands} commands after the first; "
          "ms per command (all hosts answered)")
    print(f"{'path':<40} {'median':>8} {'p95':>8} {'min':>8} {'max':>8} {'first':>8}")
    for name, (first, samples) in rows.items():
        ms = sorted(1000 * s for s in samples)
        p95 = statistics.quantiles(ms, n=100, method="inclusive")[94] if len(ms) > 1 else ms[0]
        print(f"{name:<40} {statistics.median(ms):>8.1f} {p95:>8.1f} {ms[0]:>8.1f} {ms[-1]:>8.1f} "
              f"{1000 * first:>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
