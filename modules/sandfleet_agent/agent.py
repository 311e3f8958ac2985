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
3. then, repeatedly: an ExecRequest line in, its ExecResult line out (docs/architecture.md §3);
   or, to an agent whose hello lists the ``batch`` feature, a batch line in (several tasks'
   requests), their results out one by one as each is known, then ``{"v": 1, "batch_end":
   {"ran": n}}`` (pipelining: :meth:`_Tasks.batch`).

A request that cannot be decoded gets a result with status ``error`` (its id when readable) and
the agent carries on; EOF on stdin ends the agent. Nothing but protocol lines goes to stdout.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import sys
from collections.abc import Mapping, Sequence
from typing import IO, NoReturn, Optional, Union

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


def serve(stdin: IO[str], stdout: IO[str], *, own_process: bool = False, notes: Sequence[str] = (),
          facts_cache: Optional[str] = None) -> int:
    """Answer the init line, then every request. ``own_process``: this process is the agent and
    nothing else (``main``), so it may become its tasks' subreaper, drop the session keyring it
    was started with and kill every child a task leaves; code that embeds ``serve`` (tests)
    keeps its process as it is. ``notes``: warnings for the hello (why no resident agent started).
    ``facts_cache``: a private folder remembering a working bwrap (:func:`probe`), unless the init
    line asks for fresh facts (``sandfleet doctor``)."""
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
    problems = [*notes, *(spawn.harden_agent() if own_process else [])]
    facts = probe(init.workspace_roots, init.protect, None if init.fresh_facts else facts_cache)
    try:
        host_layers: Union[tuple[Policy, ...], str] = read_host_layers(facts.home)
    except PolicyError as exc:  # fail closed: no task runs without the host owner's walls
        host_layers = f"the host's own policy is invalid, so nothing runs here until it is fixed: {exc}"
    stdout.write(wire.encode_hello(wire.AgentHello(__version__, facts.to_dict(), tuple(problems),
                                                   wire.FEATURES)) + "\n")
    stdout.flush()
    try:
        return _serve_tasks(stdin, stdout, facts, init.sandbox_pin, resolve, pool, own_process, host_layers)
    finally:
        if pool is not None:
            pool.close()  # each sandbox's init kills what runs in it and exits


def _serve_tasks(stdin: IO[str], stdout: IO[str], facts: HostFacts, pin: Optional[str],
                 resolve: Mapping[str, str], pool: Optional[SandboxPool], own_process: bool,
                 host_layers: Union[tuple[Policy, ...], str]) -> int:
    tasks = _Tasks(facts, pin, resolve, pool, own_process, host_layers, _fileno(stdin))
    for line in stdin:
        if not line.strip():
            continue
        try:
            message = wire.read_line(line)
        except wire.WireError as exc:
            _write(stdout, wire.encode_result(_bad(_id_of(line), exc)))
            continue
        if wire.is_batch(message):
            tasks.batch(message, stdout)
        else:
            _write(stdout, wire.encode_result(tasks.answer(message, len(line))))
    return 0


class _Tasks:
    """How this agent answers a request, alone or in a batch: the same checks for either."""

    def __init__(self, facts: HostFacts, pin: Optional[str], resolve: Mapping[str, str],
                 pool: Optional[SandboxPool], own_process: bool, host_layers: Union[tuple[Policy, ...], str],
                 cancel_fd: Optional[int]) -> None:
        self.facts, self.pin, self.resolve, self.pool = facts, pin, resolve, pool
        self.own_process, self.host_layers, self.cancel_fd = own_process, host_layers, cancel_fd

    def decode(self, message: object) -> Union[wire.ExecRequest, wire.ExecResult]:
        """The request, or the result that answers a request that cannot be decoded."""
        try:
            return wire.request_from_json(message)
        except wire.UnenforceableRequest as exc:  # a newer controller's rule this host cannot honour
            return wire.ExecResult(id=exc.request_id or _id_in(message), status=wire.Status.SANDBOX_UNAVAILABLE,
                                   message=str(exc))
        except wire.WireError as exc:
            return _bad(_id_in(message), exc)

    def answer(self, message: object, size: int) -> wire.ExecResult:
        """Run one request (``size``: its length as a line of its own) and return its result."""
        request = self.decode(message)
        return request if isinstance(request, wire.ExecResult) else self.run(request, size)

    def run(self, request: wire.ExecRequest, size: int) -> wire.ExecResult:
        try:
            if isinstance(self.host_layers, str):
                return wire.ExecResult(id=request.id, status=wire.Status.DENIED, message=self.host_layers)
            return _admit_size(request, size, self.host_layers) or execute(
                request, self.facts, self.pin, cancel_fd=self.cancel_fd, resolve=self.resolve, pool=self.pool,
                host_layers=self.host_layers)
        except Exception as exc:  # never let one task take the agent (and the host's other tasks) down
            return wire.ExecResult(id=request.id, status=wire.Status.ERROR,
                                   message=f"agent error: {type(exc).__name__}: {exc}")
        finally:  # what the task daemonised dies with it (the agent is their subreaper)
            if self.own_process:
                spawn.kill_orphans(self.pool.pids() if self.pool is not None else ())

    def batch(self, message: object, stdout: IO[str]) -> None:
        """Pipelining (docs/architecture.md §3): run a batch's requests in order, each result
        written as soon as it is known, and stop where :func:`wire.goes_on` says, at a request
        that cannot be decoded, or as soon as the controller writes anything (EOF included: the
        same cancel signal as during a task, as the controller sends nothing while a batch runs);
        then the end line, so the controller knows the rest did not run."""
        try:
            steps = wire.batch_from_json(message)
        except wire.WireError as exc:
            _write(stdout, wire.encode_batch_end(wire.BatchEnd(0, f"bad batch: {exc}")))
            return
        _write(stdout, wire.encode_batch_end(wire.BatchEnd(self._run_steps(steps, stdout))))

    def _run_steps(self, steps: tuple[wire.RawStep, ...], stdout: IO[str]) -> int:
        """Run the steps as far as they go; how many results were written."""
        ran = 0
        for step in steps:
            go_on = True
            for raw, size in step.requests:
                if _spoke(self.cancel_fd):
                    return ran
                request = self.decode(raw)
                result = request if isinstance(request, wire.ExecResult) else self.run(request, size)
                _write(stdout, wire.encode_result(result))
                ran += 1
                if result is request:  # undecodable: its own result, and the batch stops there
                    return ran
                go_on = go_on and wire.goes_on(result.status, step.continue_on_failure)
            if not go_on:
                return ran
        return ran


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


def _bad(request_id: str, exc: wire.WireError) -> wire.ExecResult:
    return wire.ExecResult(id=request_id, status=wire.Status.ERROR, message=f"bad request: {exc}")


def _write(stdout: IO[str], line: str) -> None:
    stdout.write(line + "\n")
    stdout.flush()


def _spoke(fd: Optional[int]) -> bool:
    """Whether the controller wrote anything (EOF included) since the batch began."""
    if fd is None:
        return False
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):  # not selectable here (a pipe on Windows): tasks watch it themselves
        return False


def _fileno(stream: IO[str]) -> Optional[int]:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None  # not a real file (tests feed a StringIO): no cancellation


def _id_of(line: str) -> str:
    try:
        return _id_in(json.loads(line))
    except ValueError:
        return ""


def _id_in(message: object) -> str:
    return str(message.get("id", "")) if isinstance(message, dict) else ""


def main(caches: Optional[str] = None, notes: Sequence[str] = ()) -> int:
    """Serve this process's stdin. ``caches``: a private folder for compiled templates, rendered
    wrappers and a working bwrap, given only by the bootstrap stub (its unpacked bundle, named by
    the bundle's hash); an installed or by-hand agent keeps none, as its folder may be shared or
    read-only. ``notes``: the stub's warnings, for the hello (:func:`serve`)."""
    if caches:
        with contextlib.suppress(OSError):  # a read-only cache only costs the compile time
            render.cache_compiled_templates(os.path.join(caches, "template-cache"))
            render.memoise_renders(os.path.join(caches, "render-memo"))
    return serve(sys.stdin, sys.stdout, own_process=True, notes=notes,
                 facts_cache=os.path.join(caches, "facts-cache") if caches else None)


#: The status Python itself exits with when it cannot flush stdout or stderr at its end.
FLUSH_FAILED = 120


def leave(code: int) -> NoReturn:
    """End this process with ``code`` once :func:`main` has returned, skipping the interpreter's
    teardown (freeing every module and object: ~8.7 ms of an agent's ~68, docs/performance.md).
    Nothing is left undone by it: the sandbox pool is closed and every task's orphans killed
    before :func:`serve` returns, the agent's threads are daemons (normal exit would not wait for
    them either), the atexit functions (the dataclass cache's save, ``weakref.finalize``) run
    here, and stdout and stderr are flushed; one that cannot be gives 120, as Python's own exit
    does. For the agent's own process only (the bootstrap stub's last step), never embedded."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None or stream.closed:  # as Python's exit: a closed stream is left alone
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # the controller is gone: a broken pipe
            code = FLUSH_FAILED
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
