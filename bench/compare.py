"""sandfleet against pyinfra, ansible-core and a bare paramiko agent, on one fleet of real sshd hosts.

Why: speed is a claim only when it is measured against the alternatives on the same hosts, in
the same run. Each "host" is its own OpenSSH sshd on loopback (tests/support/sshd.py: throw-away
keys, MaxStartups/MaxSessions raised); the workload is N hosts x K tasks of ``/bin/echo hello``,
hosts in parallel, tasks on a host in order, and every task's output is checked. Needs root and
/usr/sbin/sshd; pyinfra and ansible-core rows appear when they are installed (``pip install -e
'.[bench]'``, or a venv of their own passed with ``--peers VENV/bin``).

    python bench/compare.py [--hosts 20] [--tasks 10] [--repeat 5]
    python bench/compare.py --marginal          # (wall(K=10) - wall(K=1)) / (9 N) per row
    python bench/compare.py --scale             # dry-run 1,000 x 10; 200 sshd x 10 with peak RSS
    python bench/compare.py --rtt 0,10,50 --tasks 1,10   # each row again behind a latency proxy
    python bench/compare.py --self-check        # the latency proxy against its promises
    python bench/compare.py --against /tmp/old  # each sandfleet row also from another checkout (A/B)

Rows (whole-process wall time, Python start to exit; median of ``--repeat`` runs taken in
alternation after one warm-up round; ratios are to the bare paramiko agent of the same run). Every
runner that has one runs in its "free" mode, each host at its own pace (sandfleet and ansible
``strategy: free``, pyinfra ``--no-wait``), as the bare baseline does:

* bare paramiko agent: one connection and ONE remote ``python3`` per host, one JSON line each way
  per task, TCP_NODELAY: the thinnest thing one could write (peer-figures "paramiko agent").
* sandfleet, sandbox: false (pipelined: a host's K tasks in one batch, sandfleet/run/pipeline.py),
  and again with ``sandfleet_pipelining: false`` (one round trip per task); bwrap (one persistent
  sandbox per host and policy); bwrap served by resident agents (``sandfleet_agent_persist: 10m``:
  the warm-up leaves one per host, docs/resident-agent.md); bwrap, fresh sandbox per task
  (``sandfleet_sandbox_reuse: false``);
  Landlock (``sandfleet_sandbox: landlock``).
* pyinfra (``server.shell`` per task, output read back with ``-vvv``); ansible-core (``command``
  per task, ssh with ControlPersist and pipelining, forks = N, each result read from the
  ``oneline`` callback).

"ctl CPU s" is the controller process's own user + sys CPU (wait4); "all CPU s" is the whole
machine's busy CPU meanwhile (/proc/stat: the hosts' sshd, agents and sandboxes too, and anything
else running, so run it on a quiet machine). On loopback the hosts share the controller's 2 cores:
once "all CPU s" nears twice the wall time, the run is bound by CPU, not by round trips. Every sshd
this starts is stopped by PID when it ends (also on Ctrl-C).

``--rtt MS,MS,...`` puts bench/latency_proxy.py in front of every sshd (RTT/2 per direction, order
and throughput kept, the TCP handshake's round trip too) and runs the same rows on loopback (no
proxy) and at each RTT, for each K of ``--tasks`` (e.g. ``1,10``), every run's output checked, the
(row, RTT) pairs alternating within each round. Per row it fits wall time against RTT over the
proxied columns: the slope (s per s) is the number of round trips a run waits for one after the
other, the hosts being in parallel: round trips per host's critical path. With two K it splits
that into round trips per task ((slope(K2) - slope(K1)) / (K2 - K1)) and per host (the rest: the
connection, the agent's start, the end).

``--against TREE`` measures a change: every sandfleet row runs twice per round, once as it is and
once with the checkout TREE first on ``PYTHONPATH`` (e.g. ``git worktree add /tmp/old HEAD~3``;
its controller, and so the agent it ships), alternated, so that the change's effect on wall time
and on the machine's CPU ("all CPU s") is read from one table. The hosts see each version's own
bundle (a different hash), so both stay cached. The resident agent's row has no twin (a resident
stops those of other bundles).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from latency_proxy import LatencyProxy, self_check  # noqa: E402 - found through the path set just above

from support.sshd import USER, Fleet, SshHost, missing_reason  # noqa: E402

#: The remote half of the bare baseline: one interpreter per host, one JSON line in and out per task.
BARE_AGENT = (
    "import json,subprocess,sys\n"
    "for line in sys.stdin:\n"
    "    p = subprocess.run(json.loads(line), stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
    "    sys.stdout.write(json.dumps({'rc': p.returncode, 'out': p.stdout.decode()}) + '\\n')\n"
    "    sys.stdout.flush()\n"
)
BASE_ROW = "bare paramiko agent"


@dataclass
class Run:
    """One way to run the workload: a command line and how to check its output."""

    name: str
    argv: list[str]
    check: Callable[[str], Optional[str]]  # None when every result is right, else what is wrong
    env: Optional[dict[str, str]] = None
    merged: bool = False  # check stdout and stderr together (pyinfra logs task output to stderr)
    cwd: Optional[str] = None  # ROOT when None (``-m sandfleet`` imports from the working folder first)


# -- the bare baseline ----------------------------------------------------------------------------

def bare_worker(spec_file: str, tasks: int) -> int:
    """The baseline's controller (run as its own process, like every other row)."""
    import paramiko

    spec = json.loads(Path(spec_file).read_text())
    key = paramiko.PKey.from_path(spec["key"])
    failures: list[str] = []

    def one(address: str, port: int) -> None:
        try:
            sock = socket.create_connection((address, port), timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = paramiko.SSHClient()
            client.load_host_keys(spec["known_hosts"])
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(address, port, USER, pkey=key, sock=sock, allow_agent=False, look_for_keys=False)
            stdin, stdout, _ = client.exec_command("python3 -c " + _sh_quote(BARE_AGENT))
            for _ in range(tasks):
                stdin.write(json.dumps(["/bin/echo", "hello"]) + "\n")
                stdin.flush()
                reply = json.loads(stdout.readline())
                if reply != {"rc": 0, "out": "hello\n"}:
                    failures.append(f"{address}: {reply}")
            stdin.close()
            client.close()
        except Exception as exc:  # reported through the exit status: the row is then void
            failures.append(f"{address}: {exc}")

    threads = [threading.Thread(target=one, args=(a, p)) for a, p in spec["hosts"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.stderr.write("\n".join(failures[:5]) + "\n")
    return 1 if failures else 0


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


# -- the fleet and each row's files ---------------------------------------------------------------

class Bench:
    def __init__(self, fleet: Fleet, hosts: list[SshHost], work: Path, tasks: int, peers: Optional[str]) -> None:
        self.fleet, self.hosts, self.work, self.tasks = fleet, hosts, work, tasks
        self.total = len(hosts) * tasks
        self.known = fleet.known_hosts(work / "known_hosts", hosts)
        self.ssh_config = fleet.ssh_config(work / "ssh_config", self.known)
        self.peers = peers

    # sandfleet --------------------------------------------------------------------------------

    def sandfleet(self, name: str, backend: str, extra_vars: Optional[dict[str, str]] = None,
                  tasks: Optional[int] = None) -> Run:
        tasks = tasks or self.tasks
        tag = name.replace(" ", "-").replace(",", "").replace(":", "")
        inventory = self.fleet.inventory(self.work / f"inv-{tag}.yml", self.hosts,
                                         **{h.name: dict(extra_vars or {}) for h in self.hosts})
        task = "    - exec: {argv: [/bin/echo, hello]}\n" + ("      sandbox: false\n" if backend == "none" else "")
        playbook = self.work / f"pb-{tag}-{tasks}.yml"
        playbook.write_text("- hosts: all\n  strategy: free\n  tasks:\n" + task * tasks)
        argv = [sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory), "--format", "json",
                "--ssh-config", str(self.ssh_config), "-f", str(len(self.hosts))]
        if backend == "none":
            argv.append("--allow-unsandboxed")
        total = len(self.hosts) * tasks
        fresh = (extra_vars or {}).get("sandfleet_sandbox_reuse") == "false"

        def check(stdout: str) -> Optional[str]:
            results = [e for e in map(json.loads, stdout.splitlines()) if e.get("event") == "task_result"]
            bad = [e for e in results if e.get("status") != "ok" or e.get("backend") != backend
                   or e.get("stdout") != "hello\n"]
            if len(results) != total or bad:
                return f"{len(results)}/{total} results, first bad: {bad[:1]}"
            persistent = [e for e in results if "--as-pid-1" in e.get("wrapper", [])]
            if backend == "bwrap" and fresh and persistent:
                return "asked for a fresh sandbox per task, but tasks ran in a persistent one (agent too old?)"
            if backend == "bwrap" and not fresh and tasks > 1 and not persistent:
                return "no task ran in a persistent sandbox (a policy's tasks from its second on should)"
            return None

        return Run(name, argv, check)

    # the bare baseline ------------------------------------------------------------------------

    def bare(self, tasks: Optional[int] = None) -> Run:
        spec = self.work / "bare.json"
        spec.write_text(json.dumps({"hosts": [[h.address, h.port] for h in self.hosts],
                                    "key": str(self.fleet.client_key), "known_hosts": str(self.known)}))
        argv = [sys.executable, __file__, "--bare-worker", str(spec), "--tasks", str(tasks or self.tasks)]
        return Run(BASE_ROW, argv, lambda _out: None)

    # peers ------------------------------------------------------------------------------------

    def peer(self, program: str) -> Optional[str]:
        for folder in (self.peers, os.path.dirname(sys.executable)):
            if folder and os.access(os.path.join(folder, program), os.X_OK):
                return os.path.join(folder, program)
        return shutil.which(program)

    def pyinfra(self, tasks: Optional[int] = None) -> Optional[Run]:
        program = self.peer("pyinfra")
        if program is None:
            return None
        tasks = tasks or self.tasks
        inventory = self.work / "pyinfra_inventory.py"
        data = (f"'ssh_user': {USER!r}, 'ssh_key': {str(self.fleet.client_key)!r}, "
                f"'ssh_known_hosts_file': {str(self.known)!r}, 'ssh_strict_host_key_checking': 'yes'")
        rows = [f"    ({h.address!r}, {{'ssh_port': {h.port}, {data}}})," for h in self.hosts]
        inventory.write_text("hosts = [\n" + "\n".join(rows) + "\n]\n")
        deploy = self.work / f"pyinfra_deploy_{tasks}.py"
        deploy.write_text("from pyinfra.operations import server\n" + "".join(
            f"server.shell(name='echo {i}', commands=['/bin/echo hello'])\n" for i in range(tasks)))
        config = self.work / "pyinfra_config.py"
        config.write_text(f"PARALLEL = {len(self.hosts)}\n")
        total = len(self.hosts) * tasks

        def check(stdout: str) -> Optional[str]:
            said = [line for line in stdout.splitlines() if line.rstrip().endswith("] hello")]
            return None if len(said) == total else f"{len(said)}/{total} 'hello' lines in pyinfra's output"

        argv = [program, "-y", "-vvv", "--no-wait", "--ssh-user", USER, "--ssh-key", str(self.fleet.client_key),
                "--parallel", str(len(self.hosts)), "--config", str(config), str(inventory), str(deploy)]
        return Run("pyinfra", argv, check, env={**os.environ, "PYINFRA_PROGRESS": "off", "NO_COLOR": "1"}, merged=True)

    def ansible(self, tasks: Optional[int] = None) -> Optional[Run]:
        program = self.peer("ansible-playbook")
        if program is None:
            return None
        tasks = tasks or self.tasks
        inventory = self.work / "ansible_hosts.ini"
        inventory.write_text("[fleet]\n" + "".join(
            f"{h.name} ansible_host={h.address} ansible_port={h.port}\n" for h in self.hosts) +
            f"[fleet:vars]\nansible_user={USER}\nansible_ssh_private_key_file={self.fleet.client_key}\n"
            "ansible_python_interpreter=/usr/bin/python3\n")
        playbook = self.work / f"ansible_{tasks}.yml"
        playbook.write_text("- hosts: all\n  gather_facts: false\n  strategy: free\n  tasks:\n" + "".join(
            f"    - name: echo {i}\n      command: /bin/echo hello\n" for i in range(tasks)))
        control = Path(tempfile.mkdtemp(prefix="cp-", dir=self.work))
        env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "oneline", "ANSIBLE_HOST_KEY_CHECKING": "True",
               "ANSIBLE_PIPELINING": "True", "ANSIBLE_FORKS": str(len(self.hosts)),
               "ANSIBLE_SSH_ARGS": f"-o ControlMaster=auto -o ControlPersist=5s -o UserKnownHostsFile={self.known}",
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control), "ANSIBLE_LOCAL_TEMP": str(self.work / "ansible-tmp"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False"}
        total = len(self.hosts) * tasks

        def check(stdout: str) -> Optional[str]:
            said = [line for line in stdout.splitlines() if line.endswith(" | rc=0 | (stdout) hello")]
            return None if len(said) == total else f"{len(said)}/{total} ok results from ansible"

        return Run("ansible-core", [program, "-i", str(inventory), str(playbook)], check, env=env)


# -- timing ---------------------------------------------------------------------------------------

def with_bytecode_cache(env: Optional[dict[str, str]]) -> dict[str, str]:
    """Every row runs as on a machine that keeps Python's bytecode cache (the warm-up run writes
    it). A ``PYTHONDONTWRITEBYTECODE`` inherited from the caller would make a row whose sources
    have no cache yet (an editable install: sandfleet from a clone) compile them on every run,
    ~0.1 s of CPU an installed copy never pays."""
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def machine_busy() -> float:
    """CPU seconds this machine has been busy (every process and the kernel, not idle or iowait),
    from /proc/stat; 0 where there is none. Over a run on loopback it holds the hosts' sshd, agents
    and sandboxes as well as the controller: what bounds the wall time once the cores are full."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def timed(run: Run) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + sys, from wait4) of one whole process and the machine's
    busy CPU seconds meanwhile (:func:`machine_busy`); raises :class:`RowFailed` if its output is
    wrong. Not its peak RSS: see :func:`launched`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy = machine_busy()
        start = time.perf_counter()
        proc = subprocess.Popen(run.argv, stdout=out, stderr=out if run.merged else err, stdin=subprocess.DEVNULL,
                                cwd=run.cwd or ROOT, env=with_bytecode_cache(run.env))
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        busy = machine_busy() - busy
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    problem = None if proc.returncode == 0 else f"exit status {proc.returncode}"
    problem = problem or run.check(stdout)
    if problem:
        lost = [line for line in stdout.splitlines() if '"host_unreachable"' in line][:3]  # why, first
        raise RowFailed(f"{run.name}: {problem}\n" + "".join(f"{line[:400]}\n" for line in lost)
                        + f"{stdout[-800:]}{stderr[-800:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, busy


class RowFailed(Exception):
    """A run whose output was wrong: its row is left out of the table, with the reason."""


def table(runs: Sequence[Run], repeat: int, label: str) -> dict[str, float]:
    kept = []
    for run in runs:  # warm-up: the agent zip uploads, page cache, ControlMaster dirs
        try:
            timed(run)
            kept.append(run)
        except RowFailed as exc:
            if run.name == BASE_ROW:
                raise SystemExit(f"the baseline failed: {exc}") from None
            shown = str(exc) if os.environ.get("BENCH_DEBUG") else str(exc).splitlines()[0]
            print(f"(row left out, its output was wrong: {shown}; BENCH_DEBUG=1 shows its output)")
    runs = kept
    samples: dict[str, list[float]] = {run.name: [] for run in runs}
    cpu: dict[str, list[float]] = {run.name: [] for run in runs}
    machine: dict[str, list[float]] = {run.name: [] for run in runs}
    for _ in range(repeat):
        for run in runs:
            wall, used, busy = timed(run)
            samples[run.name].append(wall)
            cpu[run.name].append(used)
            machine[run.name].append(busy)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians.get(BASE_ROW)
    print(f"\n{label}: whole process, median of {repeat} (alternating, after a warm-up run each)")
    print(f"{'runner':<48} {'wall s':>7} {'tasks/s':>8} {'x bare':>7} {'ctl CPU s':>9} {'all CPU s':>9}   runs")
    total = int(label.split(" tasks")[0].split(" x ")[0]) * int(label.split(" x ")[1].split(" ")[0])
    for name, values in samples.items():
        med = medians[name]
        ratio = f"{med / base:.2f}" if base else "-"
        print(f"{name:<48} {med:>7.2f} {total / med:>8.0f} {ratio:>7} {statistics.median(cpu[name]):>9.2f} "
              f"{statistics.median(machine[name]):>9.2f}   "
              f"{', '.join(f'{v:.2f}' for v in values)}")
    return medians


def against(runs: list[Run], tree: str) -> list[Run]:
    """Each sandfleet row followed by its twin from the checkout ``tree`` (``--against``). Not the
    resident agent's: a resident stops those of other bundles, so two versions in turn would each
    start theirs anew at every run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, os.path.join(tree, "modules")])}
    out: list[Run] = []
    for run in runs:
        out.append(run)
        if run.name.startswith("sandfleet") and "resident" not in run.name:
            out.append(dataclasses.replace(run, name=f"{run.name} [{os.path.basename(tree.rstrip('/'))}]", env=env,
                                           cwd=tree))
    return out


def rows(bench: Bench, tasks: int, only: Optional[set[str]], say: bool = True) -> list[Run]:
    candidates: list[Optional[Run]] = [
        bench.bare(tasks),
        bench.sandfleet("sandfleet, sandbox: false", "none", tasks=tasks),
        bench.sandfleet("sandfleet, sandbox: false, no pipelining", "none", {"sandfleet_pipelining": "false"},
                        tasks=tasks),
        bench.sandfleet("sandfleet bwrap", "bwrap", tasks=tasks),
        bench.sandfleet("sandfleet bwrap, resident agent", "bwrap", {"sandfleet_agent_persist": "10m"}, tasks=tasks),
        bench.sandfleet("sandfleet bwrap, fresh sandbox per task", "bwrap", {"sandfleet_sandbox_reuse": "false"},
                        tasks=tasks),
        bench.sandfleet("sandfleet landlock", "landlock", {"sandfleet_sandbox": "landlock"}, tasks=tasks),
        bench.pyinfra(tasks),
        bench.ansible(tasks),
    ]
    found = [r for r in candidates if r is not None]
    missing = {"pyinfra", "ansible-core"} - {r.name for r in found}
    if missing and say:
        print(f"(not installed, rows left out: {', '.join(sorted(missing))}; pip install -e '.[bench]')")
    return [r for r in found if only is None or any(word in r.name for word in only)]


# -- scale ----------------------------------------------------------------------------------------

def scale_dry(work: Path, hosts: int, tasks: int) -> None:
    inventory = work / "dry-inventory.yml"
    lines = ["all:", "  vars:", "    sandfleet_os: linux", "    ansible_user: deploy",
             "    sandfleet_workspace_roots: [/srv/ws]", "  hosts:"]
    lines += [f"    h{i:04d}: {{ansible_host: 10.{i // 65536}.{i // 256 % 256}.{i % 256}}}" for i in range(hosts)]
    inventory.write_text("\n".join(lines) + "\n")
    playbook = work / "dry-playbook.yml"
    playbook.write_text("- hosts: all\n  tasks:\n" + "    - exec: {argv: [/bin/echo, hello]}\n" * tasks)
    total = hosts * tasks

    def check(stdout: str) -> Optional[str]:
        events = [json.loads(line) for line in stdout.splitlines()]
        rendered = [e for e in events if e.get("backend") == "bwrap" and e.get("wrapper")]
        return None if len(rendered) == total else f"{len(rendered)}/{total} wrappers rendered"

    run = Run("dry-run", [sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory),
                          "--dry-run", "--format", "json"], check)
    timed(run)
    times = [timed(run)[0] for _ in range(3)]
    print(f"\ndry-run {hosts} hosts x {tasks} tasks (no connections): median {statistics.median(times):.2f} s "
          f"({', '.join(f'{t:.2f}' for t in times)}); target <= 2 s")


def scale_ssh(fleet: Fleet, work: Path, count: int, tasks: int) -> None:
    started = time.perf_counter()
    hosts = [fleet.spawn() for _ in range(count)]
    print(f"\nstarted {count} sshd in {time.perf_counter() - started:.1f} s")
    bench = Bench(fleet, hosts, work, tasks, None)
    run = bench.sandfleet("sandfleet bwrap", "bwrap", tasks=tasks)
    wall, rss = launched(run, work)
    print(f"sandfleet bwrap, {count} sshd hosts x {tasks} tasks (cold: every host uploads the agent): "
          f"{wall:.2f} s, controller peak RSS {rss:.0f} MiB (target <= 300 MB, 286 MiB)")
    walls, rsses = zip(*(launched(run, work) for _ in range(2)))
    print(f"  warm: {statistics.median(walls):.2f} s ({count * tasks / statistics.median(walls):.0f} tasks/s), "
          f"controller peak RSS {max(rsses):.0f} MiB")
    resident = bench.sandfleet("sandfleet bwrap, resident agent", "bwrap", {"sandfleet_agent_persist": "10m"},
                               tasks=tasks)
    launched(resident, work)  # the first run leaves the resident agents
    walls, rsses = zip(*(launched(resident, work) for _ in range(2)))
    print(f"  warm, resident agents (sandfleet_agent_persist): {statistics.median(walls):.2f} s, "
          f"controller peak RSS {max(rsses):.0f} MiB")


def launched(run: Run, work: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``run``, started by bench/slices.py's small launcher: a
    child of this process would report at least this one's size (Linux keeps the parent's
    high-water RSS across fork and exec). Raises :class:`RowFailed` if its output is wrong."""
    from slices import finish, start

    out, err = work / "launched.out", work / "launched.err"
    sample = finish(start(run.argv, out, str(err)), out)
    problem = f"exit status {sample.code}" if sample.code else run.check(sample.out)
    if problem:
        raise RowFailed(f"{run.name}: {problem}\n{sample.out[-800:]}{err.read_text()[-800:]}")
    return sample.wall, sample.rss


# -- latency --------------------------------------------------------------------------------------

def latency_tables(fleet: Fleet, hosts: list[SshHost], work: Path, ks: list[int], rtts: list[float],
                   repeat: int, peers: Optional[str], only: Optional[set[str]]) -> None:
    """Every row on loopback and behind the latency proxy at each RTT (ms), for each K; medians,
    and per row the slope of wall time against RTT: round trips paid one after the other."""
    proxy = LatencyProxy()
    try:
        columns: list[tuple[str, Optional[float]]] = [("loopback", None)] + [(f"{r:g} ms", r) for r in rtts]
        plan: dict[tuple[int, str], list[Run]] = {}
        for label, rtt in columns:
            behind = hosts if rtt is None else [
                dataclasses.replace(h, port=proxy.add((h.address, h.port), rtt / 1000)[1], proc=None)
                for h in hosts]
            for k in ks:
                folder = work / f"rtt-{label.replace(' ', '')}-k{k}"
                folder.mkdir()
                plan[(k, label)] = rows(Bench(fleet, behind, folder, k, peers), k, only,
                                        say=(k, label) == (ks[0], "loopback"))
        failed: dict[str, str] = {}
        for k in ks:  # warm-up on loopback: the agent zip, bytecode, ControlMaster dirs
            for run in plan[(k, "loopback")]:
                if run.name in failed:
                    continue
                try:
                    timed(run)
                except RowFailed as exc:
                    if run.name == BASE_ROW:
                        raise SystemExit(f"the baseline failed: {exc}") from None
                    failed[run.name] = f"K={k} loopback: " + str(exc).splitlines()[0]
        samples: dict[tuple[str, int, str], list[float]] = {}
        machine: dict[tuple[str, int, str], list[float]] = {}  # the machine's busy CPU s (timed)
        for _ in range(repeat):
            for k in ks:
                for label, _rtt in columns:
                    for run in plan[(k, label)]:
                        if run.name in failed:
                            continue
                        try:
                            wall, _cpu, busy = timed(run)
                            samples.setdefault((run.name, k, label), []).append(wall)
                            machine.setdefault((run.name, k, label), []).append(busy)
                        except RowFailed as exc:
                            failed[run.name] = f"K={k} {label}: " + str(exc).splitlines()[0]
    finally:
        proxy.close()
    names = [r.name for r in plan[(ks[0], "loopback")] if r.name not in failed]
    proxied = [(label, rtt / 1000) for label, rtt in columns if rtt is not None]
    slopes: dict[tuple[str, int], float] = {}
    print(f"\n{len(hosts)} hosts x K tasks (/bin/echo hello), whole process wall s, median of {repeat}; "
          "columns: loopback (no proxy), then RTT through bench/latency_proxy.py; all CPU s: the machine's "
          "busy CPU during a loopback run")
    for k in ks:
        print(f"\nK = {k}")
        head = "".join(f"{label:>10}" for label, _ in columns)
        print(f"{'runner':<40}{head} {'RT/run':>8} {'all CPU s':>10}")
        for name in names:
            meds = {label: statistics.median(samples[(name, k, label)]) for label, _ in columns}
            slope = "-"
            if len({rtt for _, rtt in proxied}) >= 2:
                fit = statistics.linear_regression([rtt for _, rtt in proxied], [meds[label] for label, _ in proxied])
                slopes[(name, k)] = fit.slope
                slope = f"{fit.slope:.1f}"
            busy = statistics.median(machine[(name, k, "loopback")])
            print(f"{name:<40}" + "".join(f"{meds[label]:>10.2f}" for label, _ in columns) + f" {slope:>8}"
                  + f" {busy:>10.2f}")
    if not slopes:
        print("\n(the slope needs two RTTs or more, e.g. --rtt 0,50)")
    elif len(ks) >= 2:
        lo, hi = min(ks), max(ks)
        print(f"\nround trips (RT) waited for, from the slopes: per run at each K; per task = (RT(K={hi}) - "
              f"RT(K={lo})) / {hi - lo}; per host = RT(K={lo}) - {lo} x per task")
        print(f"{'runner':<40}" + "".join(f"{f'K={k}':>8}" for k in ks) + f" {'per task':>9} {'per host':>9}")
        for name in names:
            per_task = (slopes[(name, hi)] - slopes[(name, lo)]) / (hi - lo)
            print(f"{name:<40}" + "".join(f"{slopes[(name, k)]:>8.1f}" for k in ks)
                  + f" {per_task:>9.2f} {slopes[(name, lo)] - lo * per_task:>9.1f}")
    for why in failed.values():
        print(f"(row left out, its output was wrong at {why}; BENCH_DEBUG=1 shows its output)")


# -- main -----------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--tasks", default="10", help="K tasks per host; with --rtt a list, e.g. 1,10")
    parser.add_argument("--repeat", "--runs", dest="repeat", type=int, default=5, help="runs per median (5)")
    parser.add_argument("--rtt", metavar="MS,MS,...", help="instead: the rows on loopback and behind a latency "
                        "proxy at each RTT, with the slope of wall time against RTT (round trips per run)")
    parser.add_argument("--self-check", action="store_true",
                        help="instead: check the latency proxy (ping-pong = RTT, 10 MB not slowed)")
    parser.add_argument("--only", help="comma-separated words: keep the rows whose name has one (bare is always in)")
    parser.add_argument("--peers", metavar="DIR", help="where pyinfra and ansible-playbook are (e.g. a venv's bin)")
    parser.add_argument("--marginal", action="store_true", help="also K=1, and per host-task cost from K=1 to K")
    parser.add_argument("--scale", action="store_true", help="instead: dry-run 1,000 x 10 and 200 sshd x 10")
    parser.add_argument("--against", metavar="TREE", help="also run each sandfleet row from this checkout "
                        "(PYTHONPATH), alternated: an A/B of a change")
    parser.add_argument("--bare-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    ks = [int(k) for k in args.tasks.split(",")]
    if args.bare_worker:
        return bare_worker(args.bare_worker, ks[0])
    rtts = [float(r) for r in args.rtt.split(",")] if args.rtt else []
    if args.self_check:
        return 0 if self_check(max(rtts, default=20.0)) else 1
    if len(ks) > 1 and not rtts:
        parser.error("a list of --tasks goes with --rtt (else use --marginal)")
    args.tasks = ks[0]
    work = Path(tempfile.mkdtemp(prefix="sandfleet-compare-"))
    try:
        if args.scale:
            scale_dry(work, 1000, args.tasks)
        reason = missing_reason()
        if reason:
            raise SystemExit(f"cannot start sshd hosts: {reason}")
        # Outside /tmp: the workspace profile makes /tmp writable, and Landlock then grants /tmp
        # entry by entry to keep each workspace's .git read-only (tests/support/sshd.py's default).
        fleet = Fleet(Path(tempfile.mkdtemp(prefix="sandfleet-bench-", dir="/var/tmp")))
        try:
            if args.scale:
                scale_ssh(fleet, work, 200, args.tasks)
                return 0
            bench = Bench(fleet, [fleet.spawn() for _ in range(args.hosts)], work, args.tasks, args.peers)
            only = {w.strip() for w in args.only.split(",")} | {BASE_ROW} if args.only else None
            load = os.getloadavg()
            print(f"{os.cpu_count()} cores, load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
            if rtts:
                if not self_check(max(rtts) or 20.0):
                    print("(the latency proxy missed its figures: read the table with that in mind)")
                latency_tables(fleet, bench.hosts, work, ks, rtts, args.repeat, args.peers, only)
                load = os.getloadavg()
                print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
                return 0
            measured = rows(bench, args.tasks, only)
            if args.against:
                measured = against(measured, os.path.abspath(args.against))
            wide = table(measured, args.repeat, f"{args.hosts} x {args.tasks} tasks")
            if args.marginal:
                narrow = table(rows(bench, 1, only), args.repeat, f"{args.hosts} x 1 tasks")
                print(f"\nmarginal cost per host-task, (wall(K={args.tasks}) - wall(K=1)) / ({args.tasks - 1} x "
                      f"{args.hosts}), ms")
                for name in wide:
                    if name in narrow:
                        per = (wide[name] - narrow[name]) * 1000 / ((args.tasks - 1) * args.hosts)
                        print(f"{name:<40} {per:>7.2f}")
            load = os.getloadavg()
            print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        finally:
            fleet.cleanup()  # every sshd by PID, and what runs under it
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
