"""Per-task cost of each backend through sandfleet's own path: the local agent, one process
serving every task, exactly as `sandfleet run` on a local host pays it.

    python bench/local_tasks.py [--tasks 200] [--rounds 3]

For each backend (none, bwrap with its persistent sandbox, bwrap-fresh with a new sandbox per
task, landlock) it starts one agent, runs N `/bin/true` tasks with the workspace profile and
network none (the default intent), checks every result, and prints the median per-task
milliseconds over the rounds, alternating backends between rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

from sandfleet.transports.base import AgentInit
from sandfleet.transports.local import LocalConnection
from sandfleet_agent.portable.intent import PROFILES, SandboxIntent
from sandfleet_agent.portable.policy import DEFAULT, Effective
from sandfleet_agent.portable.wire import ExecRequest, Status

#: The operator's consent to the bare row and to Landlock (the built-in policy allows neither).
POLICY = Effective((dataclasses.replace(DEFAULT, source="bench", unsandboxed=True,
                                        linux_backends=("bwrap", "landlock")),))


def per_task_ms(mode: str, tasks: int, root: str) -> float:
    backend = mode.split("-")[0]
    conn = LocalConnection("bench")
    facts = conn.start(AgentInit((root,), None if backend == "none" else backend, sandbox_reuse=mode != "bwrap-fresh"))
    status = facts.backend(backend)
    if backend != "none" and (status is None or not status.available):
        conn.close()
        raise SystemExit(f"{backend} is unavailable here: {status.reason if status else 'not probed'}")
    intent = None if backend == "none" else SandboxIntent(PROFILES["workspace"])
    try:
        t0 = time.perf_counter()
        for i in range(tasks):
            result = conn.execute(ExecRequest(id=str(i), argv=("/bin/true",), sandbox=intent, policy=POLICY))
            if result.status is not Status.OK or result.backend != backend:
                raise SystemExit(f"{backend}: task {i} did not run as expected: {result}")
        return (time.perf_counter() - t0) * 1000 / tasks
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="none,bwrap,bwrap-fresh,landlock")
    args = parser.parse_args()
    backends = args.backends.split(",")
    if "landlock" in backends and os.geteuid() == 0:  # Landlock refuses an agent that keeps root's powers
        print("landlock: skipped (it runs only for an unprivileged agent; run this bench as another user)",
              file=sys.stderr)
        backends.remove("landlock")
    samples: dict[str, list[float]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.rounds):
            for backend in backends:
                samples[backend].append(per_task_ms(backend, args.tasks, root))
    base = statistics.median(samples["none"]) if "none" in samples else None
    header = f"{'backend':<12} {'ms/task (median)':>17} {'added vs none':>14}"
    print(f"{header}   ({args.tasks} tasks x {args.rounds} rounds)")
    for backend, values in samples.items():
        med = statistics.median(values)
        added = f"{med - base:+.2f}" if base is not None and backend != "none" else "-"
        print(f"{backend:<12} {med:>17.2f} {added:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
