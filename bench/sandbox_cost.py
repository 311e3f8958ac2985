"""What wrapping one command in a sandbox costs: per-call wall time of ``/bin/true``.

Why: sandfleet wraps every task, so the per-call overhead of each Linux backend decides which
one a host should prefer and whether the Landlock CLI form (an extra Python start) is only for
reproducing runs by hand. docs/performance.md lists what each figure guards.

    python bench/sandbox_cost.py [-n 200]

Rows: no wrapper (``subprocess.run`` uses vfork/posix_spawn); the same with a no-op
``preexec_fn`` (forces fork + exec, isolating that cost from Landlock's); bubblewrap when
installed; Landlock through ``preexec_fn`` (the ruleset built anew for every call, as a task
would); Landlock through ``python3 -m sandfleet_agent.linux.landlock_exec``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from sandfleet_agent.linux import landlock_ruleset as landlock
from sandfleet_agent.linux.landlock_ruleset import FsRule, LandlockRuleset, NetRules

TRUE = "/bin/true"


def measure(call: Callable[[], None], n: int, warmup: int = 5) -> list[float]:
    """Wall time of ``n`` calls, in milliseconds, after a warm-up."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def run(argv: list[str], **kwargs: object) -> None:
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="calls per wrapper (default 200)")
    n = parser.parse_args().n

    ws = Path(tempfile.mkdtemp(prefix="sandfleet-bench-"))
    try:
        abi = min(landlock.landlock_abi(), landlock.MAX_ABI)
        rows: list[tuple[str, Callable[[], None]]] = [
            ("none", lambda: run([TRUE])),
            ("none, fork + no-op preexec_fn", lambda: run([TRUE], preexec_fn=lambda: None)),
        ]
        bwrap = shutil.which("bwrap")
        if bwrap:
            cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind",
                   str(ws), str(ws), "--unshare-all", "--die-with-parent", "--new-session", "--", TRUE]
            rows.append(("bwrap --unshare-all --die-with-parent --new-session", lambda: run(cmd)))
        else:
            print("bwrap not installed: row skipped", file=sys.stderr)
        if abi >= 1:
            ruleset = LandlockRuleset(
                abi=abi,
                fs=(FsRule("/", "read"), FsRule(str(ws), "write"), FsRule("/dev/null", "write")),
                net=NetRules() if abi >= 4 else None,
                scope=tuple(landlock.SCOPES) if abi >= 6 else (),
            )
            rs_file = ws / "ruleset.json"
            rs_file.write_text(ruleset.to_json())

            def via_preexec() -> None:
                with landlock.prepare(ruleset) as prepared:
                    run([TRUE], **prepared.popen_kwargs())

            cli = [sys.executable, "-m", "sandfleet_agent.linux.landlock_exec", str(rs_file), "--", TRUE]
            what = f"ABI {abi}: fs" + (" + TCP" if ruleset.net else "")
            what += " + scopes" if ruleset.scope else ""
            rows.append((f"Landlock preexec_fn ({what})", via_preexec))
            rows.append(("Landlock landlock_exec CLI (python -m)", lambda: run(cli)))
        else:
            print(f"Landlock unavailable ({landlock.unavailable_reason()}): rows skipped", file=sys.stderr)

        results = [(name, measure(call, n)) for name, call in rows]
    finally:
        shutil.rmtree(ws, ignore_errors=True)

    base = statistics.median(results[0][1])
    width = max(len(name) for name, _ in results)
    print(f"/bin/true, N={n} calls each, wall ms per call")
    print(f"| {'wrapper'.ljust(width)} | median | mean  | added (median) |")
    print(f"|{'-' * (width + 2)}|-------:|------:|---------------:|")
    for name, times in results:
        med = statistics.median(times)
        added = "-" if name == "none" else f"{med - base:+.2f}"
        print(f"| {name.ljust(width)} | {med:6.2f} | {statistics.mean(times):5.2f} | {added:>14} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
