"""The agent: one process per host serving every task of a run over stdin/stdout JSON lines.

Protocol (each message one JSON line):

1. controller → agent: ``{"v": 1, "init": {"workspace_roots": [native...], "sandbox_pin": null,
   "network_resolve": {"name": "address"}}}`` — the last is the operator's name → address map
   for managed-network proxies (inventory ``sandfleet_network_resolve``; when the agent is run
   by hand, also the JSON object in ``$SANDFLEET_NETWORK_RESOLVE``, which the init line overrides),
   and ``"sandbox_reuse": true`` (absent means true): bwrap tasks with the same sandbox command
   share one persistent sandbox (:mod:`.sandbox_pool`); false gives every task a fresh one
2. agent → controller: ``{"v": 1, "hello": {"version": "...", "facts": {...}}}`` — the facts it
   probed once, so the controller can check the OS and report the backends.
3. then, repeatedly: an ExecRequest line in, its ExecResult line out (docs/architecture.md §3).

A request that cannot be decoded gets a result with status ``error`` (its id when readable) and
the agent carries on; EOF on stdin ends the agent. Nothing but protocol lines goes to stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from typing import IO, Optional, Union

from sandfleet_agent import __version__, spawn
from sandfleet_agent.backends import render
from sandfleet_agent.binding.facts import HostFacts, probe
from sandfleet_agent.executor import execute
from sandfleet_agent.linux.sandbox_pool import SandboxPool
from sandfleet_agent.portable import wire
from sandfleet_agent.portable.policy import Policy, PolicyError, raise_hint, read_host_layers

#: The operator's name → address map for managed-network proxies, as a JSON object (hand use).
RESOLVE_ENV = "SANDFLEET_NETWORK_RESOLVE"


def read_resolve(init: wire.AgentInit, environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The resolve map: ``$SANDFLEET_NETWORK_RESOLVE`` overridden by the init line's. Raises
    ``ValueError`` naming what is wrong: a bad map must stop the agent, not be half-applied."""
    env = os.environ if environ is None else environ
    if not env.get(RESOLVE_ENV) and not init.network_resolve:
        return {}
    from sandfleet_agent.network.netpolicy import (
        parse_resolve,  # only now: name checks import ipaddress and socket (~5 ms)
    )

    merged: dict[str, str] = {}
    if env.get(RESOLVE_ENV):
        try:
            merged.update(parse_resolve(json.loads(env[RESOLVE_ENV])))
        except ValueError as exc:
            raise ValueError(f"{RESOLVE_ENV}: {exc}") from None
    try:
        merged.update(parse_resolve(dict(init.network_resolve)))
    except ValueError as exc:
        raise ValueError(f"network_resolve: {exc}") from None
    return merged


def serve(stdin: IO[str], stdout: IO[str], *, own_process: bool = False) -> int:
    """Answer the init line, then every request. ``own_process``: this process is the agent and
    nothing else (``main``), so it may become its tasks' subreaper, drop the session keyring it
    was started with and kill every child a task leaves; code that embeds ``serve`` (tests)
    keeps its process as it is."""
    first = stdin.readline()
    if not first:
        return 0
    try:
        init = wire.decode_init(first)
        resolve = read_resolve(init)
    except ValueError as exc:
        stdout.write(wire.encode_init_error(f"bad init line: {exc}") + "\n")
        stdout.flush()
        return 2
    pool = SandboxPool() if init.sandbox_reuse else None
    problems = spawn.harden_agent() if own_process else []
    facts = probe(init.workspace_roots, init.protect)
    try:
        host_layers: Union[tuple[Policy, ...], str] = read_host_layers(facts.home)
    except PolicyError as exc:  # fail closed: no task runs without the host owner's walls
        host_layers = f"the host's own policy is invalid, so nothing runs here until it is fixed: {exc}"
    stdout.write(wire.encode_hello(wire.AgentHello(__version__, facts.to_dict(), tuple(problems))) + "\n")
    stdout.flush()
    try:
        return _serve_tasks(stdin, stdout, facts, init.sandbox_pin, resolve, pool, own_process, host_layers)
    finally:
        if pool is not None:
            pool.close()  # each sandbox's init kills what runs in it and exits


def _serve_tasks(stdin: IO[str], stdout: IO[str], facts: HostFacts, pin: Optional[str],
                 resolve: Mapping[str, str], pool: Optional[SandboxPool], own_process: bool,
                 host_layers: Union[tuple[Policy, ...], str]) -> int:
    for line in stdin:
        if not line.strip():
            continue
        try:
            request = wire.decode_request(line)
        except wire.UnenforceableRequest as exc:  # a newer controller's rule this host cannot honour
            result = wire.ExecResult(id=exc.request_id or _id_of(line), status=wire.Status.SANDBOX_UNAVAILABLE,
                                     message=str(exc))
        except wire.WireError as exc:
            result = wire.ExecResult(id=_id_of(line), status=wire.Status.ERROR, message=f"bad request: {exc}")
        else:
            try:
                if isinstance(host_layers, str):
                    result = wire.ExecResult(id=request.id, status=wire.Status.DENIED, message=host_layers)
                else:
                    result = _admit_size(request, len(line), host_layers) or execute(
                        request, facts, pin, cancel_fd=_fileno(stdin), resolve=resolve, pool=pool,
                        host_layers=host_layers)
            except Exception as exc:  # never let one task take the agent (and the host's other tasks) down
                result = wire.ExecResult(id=request.id, status=wire.Status.ERROR,
                                         message=f"agent error: {type(exc).__name__}: {exc}")
            finally:  # what the task daemonised dies with it (the agent is their subreaper)
                if own_process:
                    spawn.kill_orphans(pool.pids() if pool is not None else ())
        stdout.write(wire.encode_result(result) + "\n")
        stdout.flush()
    return 0


def _admit_size(request: wire.ExecRequest, size: int, host_layers: tuple[Policy, ...]) -> Optional[wire.ExecResult]:
    """A request longer than the effective policy's ``request_bytes`` is denied unread further."""
    effective = request.policy.then(*host_layers)
    limit = effective.limits.request_bytes
    if size <= limit:
        return None
    source = next((layer.source for layer in reversed(effective.layers)
                   if layer.limits is not None and layer.limits.request_bytes == limit), effective.operator.source)
    return wire.ExecResult(id=request.id, status=wire.Status.DENIED, policy_sources=effective.sources,
                           policy_digest=effective.digest(),
                           message=f"denied by the policy: the request is {size} bytes, over limits.request_bytes "
                                   f"{limit} ({raise_hint(source, 'limits.request_bytes')})")


def _fileno(stream: IO[str]) -> Optional[int]:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None  # not a real file (tests feed a StringIO): no cancellation


def _id_of(line: str) -> str:
    try:
        data = json.loads(line)
        return str(data.get("id", "")) if isinstance(data, dict) else ""
    except ValueError:
        return ""


def main(caches: Optional[str] = None) -> int:
    """Serve this process's stdin. ``caches``: a private folder for compiled templates and rendered
    wrappers, given only by the bootstrap stub (its unpacked bundle, named by the bundle's hash);
    an installed or by-hand agent keeps none, as its folder may be shared or read-only."""
    if caches:
        with contextlib.suppress(OSError):  # a read-only cache only costs the compile time
            render.cache_compiled_templates(os.path.join(caches, "template-cache"))
            render.memoise_renders(os.path.join(caches, "render-memo"))
    return serve(sys.stdin, sys.stdout, own_process=True)


if __name__ == "__main__":
    raise SystemExit(main())
