"""One controller over a fleet vs the same run cut into slices (``--slice K/N``), on this machine.

Why: a run that outgrows one controller (fleets of thousands, a CI job's time budget) is cut into
N slices that N machines run at once (a Kubernetes Indexed Job, a CI matrix: docs/slicing.md).
This measures what one slice costs against the whole, and projects a 10,000-host fleet on N
machines from it. Needs root and /usr/sbin/sshd (one sshd per host on loopback, as the tests).

    python bench/slices.py [--hosts 200] [--slices 4] [--tasks 10]

Rows, each a whole ``sandfleet run`` process (Python start to exit), the agent zip already cached
on every host: the unsliced run; the N slices started at once (each process's own wall time and
peak RSS, from wait4); each slice alone (what it takes on a machine of its own, the hosts still
sharing this one); the merge. On this machine the concurrent slices share its cores with each
other and with every sshd host, so they show the contention, not the speed-up; the "alone" rows
and the fit below are what N machines would each see.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.sshd import Fleet, missing_reason  # noqa: E402 - found through the path set just above


@dataclass
class Sample:
    wall: float  # seconds
    rss: float  # MiB, peak resident set of the process
    cpu: float  # seconds of the controller's own user + sys CPU
    code: int
    out: str


#: Each measured process is started by a small launcher that reports its wall time, CPU and peak
#: RSS. Not by this process: Linux keeps the parent's high-water RSS across fork and exec, so a
#: child of this one (which holds every run's output) would report at least this one's size.
#: Used by bench/compare.py too (its 200-host row). Arguments: the stdout file, the stderr file
#: ("-": with stdout), the command.
LAUNCHER = """\
import resource, subprocess, sys, time
t0 = time.perf_counter()
with open(sys.argv[1], "wb") as out, open(sys.argv[2] if sys.argv[2] != "-" else "/dev/null", "wb") as err:
    code = subprocess.run(sys.argv[3:], stdout=out, stderr=subprocess.STDOUT if sys.argv[2] == "-" else err,
                          stdin=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(wall, ru.ru_maxrss, ru.ru_utime + ru.ru_stime, code)
"""


def start(argv: list[str], out: Path, err: str = "-") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", LAUNCHER, str(out), err, *argv], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)


def finish(proc: subprocess.Popen[str], out: Path) -> Sample:
    wall, rss, cpu, code = proc.communicate()[0].split()
    return Sample(float(wall), int(rss) / 1024, float(cpu), int(code), out.read_text())


def run(argv: list[str], out: Path) -> Sample:
    return finish(start(argv, out), out)


def checked(sample: Sample, results: int) -> Sample:
    """Every task ok, as many results as hosts x tasks: a benchmark of a broken run means nothing."""
    events = [json.loads(line) for line in sample.out.splitlines() if line.startswith("{")]
    got = [e for e in events if e.get("event") == "task_result"]
    if sample.code != 0 or len(got) != results or any(e["status"] != "ok" for e in got):
        raise SystemExit(f"run failed ({sample.code}, {len(got)} of {results} results): {sample.out[-2000:]}")
    return sample


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``a + b * hosts`` through the (hosts, value) points."""
    n = len(points)
    mx, my = sum(p[0] for p in points) / n, sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    b = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0
    return my - b * mx, b


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--project", type=int, default=10_000, help="the fleet size to project to")
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    fleet = Fleet()
    try:
        print(f"starting {args.hosts} sshd hosts ...", flush=True)
        hosts = [fleet.spawn(log_level="ERROR") for _ in range(args.hosts)]
        work = fleet.base / "controller"
        work.mkdir()
        ssh_config = fleet.ssh_config(work / "ssh_config", fleet.known_hosts(work / "known_hosts", hosts))
        inventory = fleet.inventory(work / "inventory.yml", hosts)
        playbook = work / "playbook.yml"
        playbook.write_text("- hosts: all\n  tasks:\n" + "    - exec: {argv: [/bin/echo, hello]}\n" * args.tasks)
        base = [sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory), "--ssh-config",
                str(ssh_config), "--format", "json"]
        n = args.slices

        checked(run(base, work / "warm.out"), args.hosts * args.tasks)  # uploads the agent zip once per host
        single = checked(run(base, work / "single.out"), args.hosts * args.tasks)

        dirs = [work / f"slice-{k}" for k in range(1, n + 1)]
        began = time.perf_counter()
        started = [start([*base, "--slice", f"{k}/{n}", "--results-dir", str(d)], work / f"slice-{k}.out")
                   for k, d in enumerate(dirs, 1)]
        together = [finish(proc, work / f"slice-{k}.out") for k, proc in enumerate(started, 1)]
        together_wall = time.perf_counter() - began
        sizes = [len(json.loads((d / "@run.json").read_text())["assigned"]) for d in dirs]
        for sample, size in zip(together, sizes):
            checked(sample, size * args.tasks)
        alone = [checked(run([*base, "--slice", f"{k}/{n}"], work / f"alone-{k}.out"), size * args.tasks)
                 for k, size in enumerate(sizes, 1)]
        merge = run([sys.executable, "-m", "sandfleet", "merge", *map(str, dirs), "--format", "json"],
                    work / "merge.out")
        if merge.code != 0:
            raise SystemExit(f"merge failed ({merge.code}): {merge.out[-2000:]}")

        cores = os.cpu_count() or 1
        print(f"\n{args.hosts} sshd hosts x {args.tasks} tasks (/bin/echo hello, bwrap), warm, default forks, "
              f"{cores} cores shared by controllers and hosts")
        print(f"{'run':<30} {'hosts':>6} {'wall s':>8} {'ctl CPU s':>10} {'peak RSS MiB':>13}")

        def row(name: str, hosts: int, sample: Sample) -> None:
            print(f"{name:<30} {hosts:>6} {sample.wall:>8.2f} {sample.cpu:>10.2f} {sample.rss:>13.1f}")

        row("unsliced", args.hosts, single)
        for k, (sample, size) in enumerate(zip(together, sizes), 1):
            row(f"slice {k}/{n}, {n} at once", size, sample)
        print(f"{f'all {n} slices at once (wall)':<30} {args.hosts:>6} {together_wall:>8.2f}")
        for k, (sample, size) in enumerate(zip(alone, sizes), 1):
            row(f"slice {k}/{n} alone", size, sample)
        row(f"sandfleet merge of the {n}", args.hosts, merge)

        samples = [(args.hosts, single), *zip(sizes, alone)]
        (t0, tb), (c0, cb), (m0, mb) = (fit([(h, getattr(x, what)) for h, x in samples])
                                        for what in ("wall", "cpu", "rss"))
        print(f"\nfit over the unsliced run and the slices alone: wall = {t0:.2f} s + {tb * 1000:.1f} ms/host, "
              f"controller CPU = {c0:.2f} s + {cb * 1000:.1f} ms/host, peak RSS = {m0:.0f} MiB + "
              f"{mb * 1024:.0f} KiB/host")
        print(f"projection for {args.project:,} hosts x {args.tasks} tasks, one slice per machine. wall: with "
              f"this machine's per-host cost, which on loopback includes the hosts' own sshd, agent and "
              f"bwrap CPU (pessimistic for a real fleet); ctl CPU: the controller's own, which stays:")
        print(f"{'machines':>9} {'hosts/slice':>12} {'wall s':>8} {'ctl CPU s':>10} {'RSS MiB':>8}")
        for machines in (1, 4, 10, 25, 50, 100):
            per = math.ceil(args.project / machines)
            print(f"{machines:>9} {per:>12} {t0 + tb * per:>8.1f} {c0 + cb * per:>10.1f} {m0 + mb * per:>8.0f}")
    finally:
        fleet.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
