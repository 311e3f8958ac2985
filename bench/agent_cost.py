"""CPU one host spends on one agent's whole life, next to the bare baseline's remote half.

Why: on loopback the benchmark's hosts share the controller's cores, so what an agent costs the
host (interpreter start, imports, facts probe, Jinja2, the persistent sandbox's start) shows up
as wall time in ``bench/compare.py``. This measures it alone: the agent is started the way sshd
would start it (the bootstrap command under ``sh -c``, the zip cached as on a warm host, with its
caches: compiled dataclasses and templates, a working bwrap remembered; and the copy's stamp, as
the controller sends it), serves
K ``/bin/echo hello`` tasks and exits; the CPU of it and everything it waited for is summed.

    python bench/agent_cost.py [--python /usr/bin/python3] [--tasks 1,10] [--rounds 8]

Rows: the bare agent of bench/compare.py (one ``python3 -c`` loop); sandfleet's agent with
``sandbox: false``, with bwrap (persistent sandbox) and with a fresh bwrap per task; and, for
sandfleet's agent, the CPU its start-up phases cost measured inside one process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare import BARE_AGENT

from sandfleet.load.policies import effective
from sandfleet.transports import stamps
from sandfleet.transports.bootstrap import MARKER, agent_bundle

UNSANDBOXED = effective(None, None, unsandboxed=True, pin=None).to_json()
WORKSPACE = {"permissions": [{"path": {"special": "root"}, "access": "read"},
                             {"path": {"special": "workspace_roots"}, "access": "write"}],
             "network": {"mode": "none"}}


def children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


#: The stamp each cache's copy last reported, sent with its next start as the controller does
#: (sandfleet/transports/stamps.py): a warm host's stub then checks nothing.
STAMPS: dict[str, str] = {}


def sandfleet_agent(python: str, mode: str, tasks: int, cache: str, root: str) -> None:
    bundle = agent_bundle()
    proc = subprocess.Popen(["sh", "-c", bundle.command(python, stamp=STAMPS.get(cache))], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "XDG_CACHE_HOME": cache})
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline()
    if line.startswith(f"{MARKER} upload".encode()):
        proc.stdin.write(bundle.data)
        proc.stdin.flush()
        line = proc.stdout.readline()
    words = line.decode().split()
    if len(words) == 5 and stamps.valid(words[4]):
        STAMPS[cache] = words[4]
    init = {"v": 1, "init": {"workspace_roots": [root], "sandbox_pin": None, "sandbox_reuse": mode != "fresh"}}
    proc.stdin.write((json.dumps(init) + "\n").encode())
    proc.stdin.flush()
    proc.stdout.readline()  # hello
    sandbox = None if mode == "none" else WORKSPACE
    for i in range(tasks):
        request = {"v": 1, "id": f"t{i}", "argv": ["/bin/echo", "hello"], "env": {}, "sandbox": sandbox}
        if mode == "none":  # the operator's consent, as --allow-unsandboxed sends it
            request["policy"] = UNSANDBOXED
        proc.stdin.write((json.dumps(request) + "\n").encode())
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
        if result["status"] != "ok" or result["stdout"] != "hello\n":
            raise SystemExit(f"{mode}: task failed: {result}")
    proc.stdin.close()
    proc.wait()


def bare_agent(python: str, tasks: int) -> None:
    proc = subprocess.Popen([python, "-c", BARE_AGENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    for _ in range(tasks):
        proc.stdin.write(b'["/bin/echo", "hello"]\n')
        proc.stdin.flush()
        if json.loads(proc.stdout.readline()) != {"rc": 0, "out": "hello\n"}:
            raise SystemExit("bare agent: wrong answer")
    proc.stdin.close()
    proc.wait()


def phases(python: str, cache: str, root: str) -> str:
    """CPU of each start-up phase, measured inside one agent process from the unpacked bundle."""
    unpacked = os.path.join(cache, "sandfleet", "agent-" + agent_bundle().sha256)
    code = f"""
import json, sys, time
sys.path.insert(0, {unpacked!r})
cpu = time.process_time
t0 = cpu()
from {agent_bundle_package()}.dataclass_code import cache_compiled, defer_inspect
defer_inspect()  # as the stub does
cache_compiled({os.path.join(unpacked, "dataclass-cache")!r})
import {agent_bundle_package()}.agent
from {agent_bundle_package()}.portable import wire
from {agent_bundle_package()}.executor import execute
from {agent_bundle_package()}.binding.facts import probe
t1 = cpu()
facts = probe(({root!r},))
t2 = cpu()
import jinja2
t3 = cpu()
request = wire.decode_request(json.dumps({{"v": 1, "id": "t", "argv": ["/bin/true"], "env": {{}},
                                           "sandbox": {WORKSPACE!r}}}))
execute(request, facts, None)
t4 = cpu()
print("imports %.1f ms, facts probe %.1f ms (+ its bwrap child), jinja2 import %.1f ms, first render and "
      "task %.1f ms (template compiled, no bytecode cache)" % tuple(1000 * (b - a) for a, b in
      ((t0, t1), (t1, t2), (t2, t3), (t3, t4))))
"""
    return subprocess.run([python, "-E", "-s", "-S", "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def agent_bundle_package() -> str:
    from sandfleet.transports.bootstrap import AGENT_PACKAGE

    return AGENT_PACKAGE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/usr/bin/python3", help="the hosts' interpreter (not a pyenv shim)")
    parser.add_argument("--tasks", default="1,10")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="agent-cost-")
    root = tempfile.mkdtemp(prefix="agent-cost-ws-", dir="/var/tmp")
    os.mkdir(os.path.join(root, ".git"))  # present, so every task renders the same wrapper
    rows = {"bare python3 -c agent (bench/compare.py)": lambda k: bare_agent(args.python, k)}
    for mode in ("none", "bwrap", "fresh"):
        rows[f"sandfleet agent, {mode}"] = lambda k, m=mode: sandfleet_agent(args.python, m, k, cache, root)
    print(f"CPU per agent lifetime (start, hello, K tasks, exit; children included), ms, median of {args.rounds}")
    print(f"{'agent':<44}" + "".join(f"{'K=' + k:>10}" for k in args.tasks.split(",")))
    for name, run in rows.items():
        cells = []
        for k in map(int, args.tasks.split(",")):
            run(k)  # warm: the zip unpacked and its bytecode written, as on a host that ran before
            samples = []
            for _ in range(args.rounds):
                before = children_cpu_ms()
                run(k)
                samples.append(children_cpu_ms() - before)
            samples.sort()
            cells.append(f"{samples[len(samples) // 2]:>10.1f}")
        print(f"{name:<44}" + "".join(cells))
    print("\nsandfleet agent start-up phases (one process, CPU):", phases(args.python, cache, root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
