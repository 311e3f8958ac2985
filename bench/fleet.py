"""Whole-run wall time of sandfleet over SSH against a bare paramiko baseline, same fleet.

Why: sandfleet adds a remote agent, a sandbox per task and a JSON protocol on top of SSH; this
shows what that costs against the thinnest thing one could write with paramiko (one connection
per host, one ``exec_command`` per task, ``TCP_NODELAY`` on), the baseline the
peer benchmarks use (bench/compare.py). Needs root and /usr/sbin/sshd (it starts one sshd per
host on loopback, as the tests do).

    python bench/fleet.py [--hosts 20] [--tasks 10] [--repeat 3]

Each figure is the wall time of a whole process (Python start, imports, handshakes, all tasks,
exit), median of ``--repeat`` runs, every run's output checked. "sandfleet cold" is the first run,
when every host still needs the agent zip; the others run warm.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.sshd import USER, Fleet, missing_reason  # noqa: E402 - found through the path set just above


def baseline(hosts_file: str, tasks: int) -> int:
    """One paramiko connection per host, one exec per task; host keys checked against known_hosts."""
    import paramiko

    spec = json.loads(Path(hosts_file).read_text())
    key = paramiko.PKey.from_path(spec["key"])
    failures: list[str] = []

    def one(address: str, port: int) -> None:
        sock = socket.create_connection((address, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = paramiko.SSHClient()
        client.load_host_keys(spec["known_hosts"])
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(address, port, USER, pkey=key, sock=sock, allow_agent=False, look_for_keys=False)
        for _ in range(tasks):
            _, stdout, _ = client.exec_command("/bin/echo hello")
            if stdout.read() != b"hello\n" or stdout.channel.recv_exit_status() != 0:
                failures.append(address)
        client.close()

    threads = [threading.Thread(target=one, args=(a, p)) for a, p in spec["hosts"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 1 if failures else 0


def timed(argv: list[str], check: Callable[[str], bool]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or not check(proc.stdout):
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--forks-sweep", metavar="N,N,...",
                        help="instead: time the warm sandboxed run at each --forks value (how the default was chosen)")
    parser.add_argument("--baseline-worker", metavar="HOSTS_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        return baseline(args.baseline_worker, args.tasks)
    reason = missing_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")

    fleet = Fleet()
    try:
        hosts = [fleet.spawn() for _ in range(args.hosts)]
        work = fleet.base / "controller"
        work.mkdir()
        known = fleet.known_hosts(work / "known_hosts", hosts)
        ssh_config = fleet.ssh_config(work / "ssh_config", known)
        inventory = fleet.inventory(work / "inventory.yml", hosts)
        playbook = work / "playbook.yml"
        playbook.write_text("- hosts: all\n  tasks:\n" + "    - exec: {argv: [/bin/echo, hello]}\n" * args.tasks)
        bare = work / "bare.yml"  # the same tasks without a sandbox: what the transport and agent cost
        bare.write_text(playbook.read_text().replace("hello]}", "hello]}\n      sandbox: false"))
        spec = work / "hosts.json"
        spec.write_text(json.dumps({"hosts": [[h.address, h.port] for h in hosts], "key": str(fleet.client_key),
                                    "known_hosts": str(known)}))
        total = args.hosts * args.tasks

        def all_ok(backend: str) -> Callable[[str], bool]:
            def check(stdout: str) -> bool:
                events = [json.loads(line) for line in stdout.splitlines()]
                results = [e for e in events if e["event"] == "task_result"]
                return len(results) == total and all(e["status"] == "ok" and e["backend"] == backend
                                                     and e["stdout"] == "hello\n" for e in results)
            return check

        def sandfleet(pb: Path, *extra: str, forks: int = args.hosts) -> list[str]:
            return [sys.executable, "-m", "sandfleet", "run", str(pb), "-i", str(inventory), "--format", "json",
                    "--ssh-config", str(ssh_config), "-f", str(forks), *extra]

        if args.forks_sweep:
            timed(sandfleet(playbook), all_ok("bwrap"))  # upload the zip once
            print(f"{args.hosts} hosts x {args.tasks} sandboxed tasks, warm, median of {args.repeat}")
            print(f"{'forks':>6} {'wall s':>8}")
            for forks in (int(n) for n in args.forks_sweep.split(",")):
                times = [timed(sandfleet(playbook, forks=forks), all_ok("bwrap")) for _ in range(args.repeat)]
                print(f"{forks:>6} {statistics.median(times):>8.2f}")
            return 0

        runs: dict[str, tuple[list[str], Callable[[str], bool]]] = {
            "sandfleet (warm: agent zip cached)": (sandfleet(playbook), all_ok("bwrap")),
            "sandfleet, sandbox: false": (sandfleet(bare, "--allow-unsandboxed"), all_ok("none")),
            "paramiko exec + TCP_NODELAY": ([sys.executable, __file__, "--baseline-worker", str(spec), "--tasks",
                                             str(args.tasks)], lambda _out: True),
        }
        cold = timed(*runs["sandfleet (warm: agent zip cached)"])
        rows: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, (argv, check) in runs.items():
                rows[name].append(timed(argv, check))
        print(f"{args.hosts} hosts x {args.tasks} tasks (/bin/echo hello), whole process, median of {args.repeat}")
        print(f"{'runner':<40} {'wall s':>8} {'tasks/s':>8}")
        print(f"{'sandfleet (cold: uploads the zip)':<40} {cold:>8.2f} {total / cold:>8.0f}   (one run)")
        for name, times in rows.items():
            median = statistics.median(times)
            print(f"{name:<40} {median:>8.2f} {total / median:>8.0f}   "
                  f"({', '.join(f'{t:.2f}' for t in times)})")
    finally:
        fleet.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
