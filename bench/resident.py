"""What a resident agent (``sandfleet_agent_persist``, docs/resident-agent.md) saves per host and run.

Why: every run starts an agent on every host (interpreter, imports, the stub's bundle check, the
facts probe); a resident agent pays that once and serves later runs from a fork of itself, the
round trips staying the same (one exec per run). Two measurements:

1. One host, CPU: the bootstrap command run under ``sh -c`` as sshd would run it (the zip
   cached), K ``/bin/echo hello`` tasks under bwrap, EOF. With persist off that is the stub's
   process and its children; with it on (warm: a resident is up) the stub is only the relay, and
   the run's agent is a child of the resident, whose own and reaped children's CPU is read from
   ``/proc/PID/stat`` (clock ticks, so averaged over ``--rounds`` runs).
2. A fleet (root and /usr/sbin/sshd, as the tests): ``--hosts`` sshd hosts on loopback, a whole
   ``sandfleet run`` of K tasks, persist off and on (warm): its wall time (median of
   ``--repeat``) and the CPU the hosts spent on it: this process becomes a child subreaper, so
   every process of the hosts (sshd's sessions, stubs, agents, tasks, the residents) ends up
   reaped by it, by an sshd or by a resident, each of which is read; the controller's own CPU
   is taken out (``wait4``).

    python bench/resident.py [--tasks 0,1,10] [--rounds 20] [--hosts 20] [--repeat 3] [--no-fleet]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from sandfleet.transports.bootstrap import MARKER, agent_bundle  # noqa: E402 - after the path for support/
from support.sshd import Fleet, descendants, missing_reason  # noqa: E402

PERSIST_S = 600
WORKSPACE = {"permissions": [{"path": {"special": "root"}, "access": "read"},
                             {"path": {"special": "workspace_roots"}, "access": "write"}],
             "network": {"mode": "none"}}
CLK = os.sysconf("SC_CLK_TCK")


def children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def process_cpu_ms(pid: int) -> float:
    """CPU of ``pid`` and of every child it has reaped (ms, clock-tick resolution); 0 when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) * 1000 / CLK


def resident_pids(cache: Path) -> list[int]:
    """The resident servers under ``cache`` (each writes its pid into its lock file)."""
    found = []
    for lock in (cache / "sandfleet" / "run").glob("*.lock"):
        try:
            pid = int(lock.read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            found.append(pid)
    return found


def settle(pids: list[int]) -> None:
    """Wait until ``pids`` have reaped their children (a run's processes count once reaped)."""
    deadline = time.monotonic() + 10
    while any(descendants(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


# --- 1. one host --------------------------------------------------------------------------------

def one_run(python: str, cache: str, root: str, tasks: int, persist: int) -> str:
    bundle = agent_bundle()
    init = json.dumps({"v": 1, "init": {"workspace_roots": [root], "sandbox_pin": None}}).encode() + b"\n"
    proc = subprocess.Popen(["sh", "-c", bundle.command(python, init=init, persist_s=persist)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "XDG_CACHE_HOME": cache})
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline()
    if line.startswith(f"{MARKER} upload".encode()):
        proc.stdin.write(bundle.data)
        proc.stdin.flush()
        line = proc.stdout.readline()
    proc.stdout.readline()  # hello
    for i in range(tasks):
        request = {"v": 1, "id": f"t{i}", "argv": ["/bin/echo", "hello"], "env": {}, "sandbox": WORKSPACE}
        proc.stdin.write((json.dumps(request) + "\n").encode())
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
        if result["status"] != "ok" or result["stdout"] != "hello\n":
            raise SystemExit(f"task failed: {result}")
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit(f"the run exited {proc.returncode}")
    return line.split()[2].decode()


def one_host(python: str, ks: list[int], rounds: int) -> None:
    cache = tempfile.mkdtemp(prefix="resident-bench-")
    root = tempfile.mkdtemp(prefix="resident-bench-ws-", dir="/var/tmp")
    os.mkdir(os.path.join(root, ".git"))  # present, so every task renders the same wrapper
    print(f"One host: CPU per run (start, hello, K tasks under bwrap, exit), ms, mean of {rounds} runs")
    print(f"{'persist':<22}" + "".join(f"{'K=' + str(k):>22}" for k in ks))
    try:
        rows: dict[str, list[str]] = {}
        for persist in (0, PERSIST_S):
            label = "off (fresh agent)" if persist == 0 else "on (warm resident)"
            cells = []
            for k in ks:
                for _ in range(2):  # warm: the zip unpacked, its bytecode written, a resident up
                    kind = one_run(python, cache, root, k, persist)
                servers = resident_pids(Path(cache)) if persist else []
                before, served = children_cpu_ms(), sum(map(process_cpu_ms, servers))
                for _ in range(rounds):
                    kind = one_run(python, cache, root, k, persist)
                settle(servers)
                stub = (children_cpu_ms() - before) / rounds
                resident = (sum(map(process_cpu_ms, servers)) - served) / rounds
                cells.append(f"{stub + resident:>7.1f} ({stub:4.1f}+{resident:4.1f})" if persist else f"{stub:>7.1f}")
                assert kind == ("resident" if persist else "cached"), kind
            rows[label] = cells
        for label, cells in rows.items():
            print(f"{label:<22}" + "".join(f"{c:>22}" for c in cells))
        print("(on: relay + the resident's child serving the run)")
    finally:
        subprocess.run(["sh", "-c", agent_bundle().stop_command(python)], env={**os.environ, "XDG_CACHE_HOME": cache},
                       capture_output=True)


# --- 2. a fleet ---------------------------------------------------------------------------------

def fleet_runs(hosts: int, ks: list[int], repeat: int) -> None:
    reason = missing_reason()
    if reason:
        print(f"\n(fleet skipped: {reason})")
        return
    import ctypes

    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the hosts come here
    fleet = Fleet()
    try:
        spawned = [fleet.spawn() for _ in range(hosts)]
        work = fleet.base / "controller"
        work.mkdir()
        ssh_config = fleet.ssh_config(work / "ssh_config", fleet.known_hosts(work / "known_hosts", spawned))
        inventories = {
            "off": fleet.inventory(work / "off.yml", spawned),
            "on": fleet.inventory(work / "on.yml", spawned,
                                  **{h.name: {"sandfleet_agent_persist": f"{PERSIST_S}s"} for h in spawned}),
        }
        sshds = [h.proc.pid for h in spawned if h.proc is not None]

        def host_cpu() -> float:
            """Everything the hosts spent so far: the sshds and residents with what they reaped,
            and what was orphaned to this process (reaped here first)."""
            servers = [p for h in spawned for p in resident_pids(h.cache)]
            settle(sshds + servers)
            _reap_orphans()
            return sum(map(process_cpu_ms, sshds + servers)) + children_cpu_ms()

        print(f"\n{hosts} sshd hosts, whole `sandfleet run` of K /bin/echo tasks (bwrap), median of {repeat}")
        print(f"{'persist':<22}{'K':>4}{'wall s':>9}{'host CPU ms/run':>17}{'per host':>10}{'controller ms':>15}")
        for k in ks:
            playbook = work / f"pb{k}.yml"
            playbook.write_text("- hosts: all\n  tasks:\n" + "    - exec: {argv: [/bin/echo, hello]}\n" * max(k, 1))
            for mode, inventory in inventories.items():
                argv = [sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory), "--format",
                        "json", "--ssh-config", str(ssh_config), "-f", str(hosts)]
                check = _all_ok(hosts * max(k, 1))
                _timed(argv, check)  # warm: zips cached; with persist on, the residents start here
                walls, cpus, ctl = [], [], []
                for _ in range(repeat):
                    cpu0 = host_cpu()
                    wall, controller = _timed(argv, check)
                    walls.append(wall)
                    ctl.append(controller)
                    cpus.append(host_cpu() - cpu0 - controller)
                label = "off (fresh agents)" if mode == "off" else "on (warm residents)"
                cpu = statistics.median(cpus)
                print(f"{label:<22}{max(k, 1):>4}{statistics.median(walls):>9.2f}{cpu:>17.0f}{cpu / hosts:>10.1f}"
                      f"{statistics.median(ctl):>15.0f}")
    finally:
        for h in fleet.hosts:
            for pid in resident_pids(h.cache):
                os.kill(pid, 9)
        fleet.cleanup()


def _reap_orphans() -> None:
    """Reap what was re-parented here and has ended (between runs: no run's status is taken)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _all_ok(total: int) -> Callable[[str], bool]:
    def check(stdout: str) -> bool:
        results = [e for e in map(json.loads, stdout.splitlines()) if e["event"] == "task_result"]
        return len(results) == total and all(e["status"] == "ok" for e in results)
    return check


def _timed(argv: list[str], check: Callable[[str], bool]) -> tuple[float, float]:
    """The run's wall time and its own CPU (ms), from ``wait4``."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0 or not check(stdout):
        raise SystemExit(f"run failed ({proc.returncode}): {stdout[-2000:]}{stderr[-2000:]}")
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/usr/bin/python3", help="the hosts' interpreter (not a pyenv shim)")
    parser.add_argument("--tasks", default="0,1,10", help="K values, comma-separated (the fleet runs K >= 1)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-fleet", action="store_true", help="only the one-host measurement")
    args = parser.parse_args()
    ks = [int(k) for k in args.tasks.split(",")]
    one_host(args.python, ks, args.rounds)
    if not args.no_fleet:
        fleet_runs(args.hosts, sorted({max(k, 1) for k in ks}), args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
