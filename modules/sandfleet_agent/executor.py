"""One request in, one result out: bind, choose, render, spawn (docs/architecture.md §4).

:func:`prepare` is everything up to the spawn and is what a dry-run calls with assumed facts, so
the wrapper a dry-run prints is the wrapper a run executes. Anything that cannot be enforced
comes back as a ``sandbox_unavailable`` result before a single process starts.

A managed-network task runs inside :func:`_with_proxy`: its own proxy session
(:mod:`.netproxy`) is started before the wrapper is rendered against its endpoint and stopped
when the task ends; its decisions go into the result. A dry-run renders against a nominal endpoint.
"""

from __future__ import annotations

import _thread  # not threading (~1 ms of every start) for one lock
import dataclasses
import errno
import json
import operator
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from sandfleet_agent import spawn
from sandfleet_agent.backends import Refused, Wrapper, backend_class, wrap
from sandfleet_agent.backends.base import Bare, ProxyEndpoint
from sandfleet_agent.binding.admission import Denial, admit_bare, admit_bound, backends, with_denies
from sandfleet_agent.binding.bind import BindError, FsView, LocalFs, bind, bind_cwd, workspace_roots
from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.binding.hostfs import MemoFs, Observation, ReplayFs, replay
from sandfleet_agent.bounds import Bounds
from sandfleet_agent.linux.sandbox_pool import SandboxDied, SandboxPool, reusable, run_reused, split_wrapper
from sandfleet_agent.portable.intent import NetworkMode, NetworkPolicy
from sandfleet_agent.portable.limits import TaskLimits, for_host
from sandfleet_agent.portable.policy import Effective, Policy
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status


@dataclass(frozen=True)
class Prepared:
    """A request made ready to run: the wrapper that enforces it and what binding warned about."""

    wrapper: Wrapper
    warnings: tuple[str, ...] = ()
    #: The task's resource limits, as the policy settled them (:mod:`.limits`).
    limits: TaskLimits = field(default_factory=TaskLimits)
    #: The agent's variables the policy passes through to the task (``env_passthrough``).
    env_passthrough: tuple[str, ...] = ()


def refusal(request: ExecRequest, message: str, warnings: tuple[str, ...] = ()) -> ExecResult:
    return ExecResult(id=request.id, status=Status.SANDBOX_UNAVAILABLE, message=message, warnings=warnings)


def denied(request: ExecRequest, denial: Denial, warnings: tuple[str, ...] = ()) -> ExecResult:
    return ExecResult(id=request.id, status=Status.DENIED, message=f"denied by the policy: {denial.message}",
                      warnings=warnings)


def prepare(
    request: ExecRequest, facts: HostFacts, fs: FsView, pin: Optional[str] = None,
    proxy: Optional[ProxyEndpoint] = None, host_layers: tuple[Policy, ...] = (),
) -> Union[Prepared, ExecResult]:
    """The exact wrapper for ``request`` on this host, or the result that refuses it: ``denied``
    when it asks for more than the effective policy (the request's operator layers, then the
    host owner's ``host_layers``) allows, ``sandbox_unavailable`` when no backend can hold it.

    ``proxy`` is the running proxy of a managed-network task; without one (a dry-run) the
    wrapper is rendered against a nominal endpoint, and nothing is started."""
    effective = request.policy.then(*host_layers)
    fs = fs if isinstance(fs, MemoFs) else MemoFs(fs)
    asked = request.sandbox.limits if request.sandbox else TaskLimits()
    limits, denial = effective.task_limits(asked, facts.mem_total)
    if denial is not None:
        return denied(request, denial)
    limits, limit_notes, unenforceable = for_host(limits, {k for k, _ in asked.items()} | effective.limits_named(),
                                                  facts.os, effective.limits_best_effort)
    if unenforceable is not None:
        return refusal(request, unenforceable)
    if request.sandbox is None:
        denial = admit_bare(effective)
        if denial is not None:
            return denied(request, denial)
        try:
            cwd = bind_cwd(request.cwd, workspace_roots(None, facts), facts, fs)
        except BindError as exc:
            return ExecResult(id=request.id, status=Status.ERROR, message=str(exc))
        return Prepared(Bare(facts).render_bare(request.argv, cwd), limit_notes, limits, effective.env_passthrough)
    try:
        policy = bind(with_denies(request.sandbox, effective), facts, request.cwd, fs, effective.protected)
    except BindError as exc:
        return refusal(request, f"sandbox intent cannot be bound on this host: {exc}")
    denial = admit_bound(policy, facts, fs, effective, pin)
    if denial is not None:
        return denied(request, denial, policy.warnings)
    if proxy is None and policy.network.mode is NetworkMode.MANAGED:
        from sandfleet_agent.network.netproxy import nominal_endpoint  # managed network only: see _with_proxy

        proxy = nominal_endpoint(facts.tmpdir, facts.os)
    try:
        wrapper = wrap(policy, request.argv, facts, pin, proxy, allowed=backends(effective, pin) if facts.os == "linux"
                       else None, hints_choose=effective.hints, fs=fs)
    except Refused as exc:
        return refusal(request, str(exc), policy.warnings)
    return Prepared(wrapper, policy.warnings + wrapper.notes + limit_notes, limits, effective.env_passthrough)


#: Prepared tasks one agent remembers, most recent first (docs/performance.md "Host side: each
#: task").
MEMO_ENTRIES = 8


@dataclass(frozen=True)
class _Remembered:
    """One prepare on this host's own filesystem: what it was given (all but the argv), every
    question it asked the filesystem with the answer, and what it returned for ``argv``;
    ``apart``: whether another argv can be put in its wrapper (:func:`_argv_apart`), else it
    serves this argv only (a Landlock task's)."""

    inputs: tuple[object, ...]
    log: tuple[Observation, ...]
    argv: tuple[str, ...]
    prepared: Prepared
    apart: bool


_memo: list[_Remembered] = []
_memo_lock = _thread.allocate_lock()  # what threading.Lock is


def prepare_local(request: ExecRequest, facts: HostFacts, pin: Optional[str] = None,
                  host_layers: tuple[Policy, ...] = ()) -> Union[Prepared, ExecResult]:
    """:func:`prepare` on this host's own filesystem, reusing an earlier result for the same
    policy, intent and cwd only when the filesystem answers every question that result was
    computed from exactly as it did then (:func:`.hostfs.replay`): then a fresh computation would
    take the same steps to the same wrapper, whatever a task changed in between (a ``.git``
    created, a directory swapped for a symlink: either changes an answer, so it is computed
    afresh). Why: binding, the policy check and rendering cost ~1.5 ms of CPU per bwrap task
    (a bare task's ~0.1 ms); asking the same questions again costs a fraction."""
    # everything prepare reads but the filesystem and the argv; the wire decodes type-strictly, so
    # equal inputs are the same values (os.getpid(): a forked agent's Landlock temp dir differs)
    inputs = (request.policy, request.sandbox, request.cwd, facts, pin, host_layers, os.getpid())
    entry = _take(inputs)
    if entry is not None:  # out of the memo: back in front if it still holds, else a fresh one replaces it
        reused = _for_argv(entry, request.argv, facts) if replay(entry.log, ReplayFs()) else None
        if reused is not None:
            _keep(entry)
            return reused
    fs = MemoFs(LocalFs())
    prepared = prepare(request, facts, fs, pin, None, host_layers)
    if isinstance(prepared, Prepared) and not fs.tainted:
        _keep(_Remembered(inputs, tuple(fs.log), request.argv, prepared,
                          _argv_apart(request, prepared.wrapper, facts)))
    return prepared


def _argv_apart(request: ExecRequest, wrapper: Wrapper, facts: HostFacts) -> bool:
    """Whether another argv can be put in ``wrapper`` (:func:`_for_argv`): a bwrap wrapper's
    tail, or a bare task's wrapper, which :func:`prepare` makes last from the argv and the cwd
    alone (``render_bare``; checked: it is the one rendered for them)."""
    if wrapper.backend == "bwrap":
        return split_wrapper(wrapper, request.argv) is not None
    return request.sandbox is None and wrapper == Bare(facts).render_bare(request.argv, wrapper.cwd)


def _take(inputs: tuple[object, ...]) -> Optional[_Remembered]:
    """The remembered prepare for exactly these inputs, taken out of the memo."""
    with _memo_lock:  # an embedding program may run tasks from several threads
        for index, entry in enumerate(_memo):
            if entry.inputs == inputs:
                return _memo.pop(index)
    return None


def _keep(entry: _Remembered) -> None:
    with _memo_lock:
        _memo.insert(0, entry)
        del _memo[MEMO_ENTRIES:]


def _for_argv(entry: _Remembered, argv: tuple[str, ...], facts: HostFacts) -> Optional[Prepared]:
    """The remembered result for another command: a bare task's wrapper rendered anew for it, as
    :func:`prepare` does last; a bwrap wrapper ends ``--chdir CWD -- ARGV`` and nothing before it
    depends on the argv (backends/bwrap.py), each word going through JSON (backends/render.py),
    so only words JSON gives back unchanged are put in; None otherwise."""
    if argv == entry.argv:
        return entry.prepared
    if not entry.apart:
        return None
    wrapper = entry.prepared.wrapper
    if wrapper.backend != "bwrap":  # a bare task's, the only other kind apart (_argv_apart)
        return dataclasses.replace(entry.prepared, wrapper=Bare(facts).render_bare(argv, wrapper.cwd)) if argv \
            else None
    key = split_wrapper(wrapper, entry.argv)
    if key is None or wrapper.cwd is None or not argv or any(json.loads(json.dumps(a)) != a for a in argv):
        return None
    return dataclasses.replace(entry.prepared, wrapper=dataclasses.replace(
        wrapper, argv=(*key, "--chdir", wrapper.cwd, "--", *argv)))


def execute(
    request: ExecRequest, facts: HostFacts, pin: Optional[str] = None, fs: Optional[FsView] = None,
    cancel_fd: Optional[int] = None, pool: Optional[SandboxPool] = None,
    resolve: Optional[Mapping[str, str]] = None, proxy: Optional[ProxyEndpoint] = None,
    host_layers: tuple[Policy, ...] = (),
) -> ExecResult:
    """Run ``request`` under the effective policy (its operator layers, then ``host_layers``);
    the result says which layers applied and their digest. A managed-network task first gets its
    own proxy (``resolve``: the operator's name → address map), for exactly as long as it runs."""
    effective = request.policy.then(*host_layers)
    result = _execute(request, facts, pin, fs, cancel_fd, pool, resolve, proxy, host_layers)
    return dataclasses.replace(result, policy_sources=effective.sources, policy_digest=_digest(effective))


#: The last effective policy's layers and their digest.
_last_digest: tuple[tuple[Policy, ...], str] = ((), "")


def _digest(effective: Effective) -> str:
    """``effective.digest()``, kept for the same layer objects (immutable): an agent's requests
    share them (the wire decodes a run's repeated policy once; the host's layers are read once),
    and the digest is ~12 us of JSON and SHA-256 a task (docs/performance.md "Host side: each task")."""
    global _last_digest
    layers, digest = _last_digest
    if len(layers) == len(effective.layers) and all(map(operator.is_, layers, effective.layers)):
        return digest
    digest = effective.digest()
    _last_digest = (effective.layers, digest)
    return digest


def _execute(
    request: ExecRequest, facts: HostFacts, pin: Optional[str], fs: Optional[FsView], cancel_fd: Optional[int],
    pool: Optional[SandboxPool], resolve: Optional[Mapping[str, str]], proxy: Optional[ProxyEndpoint],
    host_layers: tuple[Policy, ...],
) -> ExecResult:
    if proxy is None and request.sandbox is not None and request.sandbox.network.mode is NetworkMode.MANAGED:
        early = prepare(request, facts, fs or LocalFs(), pin, None, host_layers)
        if isinstance(early, ExecResult):  # denied or unbindable: no proxy is started for it
            return early
        return _with_proxy(request, request.sandbox.network, facts, resolve,
                           lambda endpoint: _execute(request, facts, pin, fs, cancel_fd, pool, resolve, endpoint,
                                                     host_layers))
    if fs is None and proxy is None:
        prepared = prepare_local(request, facts, pin, host_layers)
    else:
        prepared = prepare(request, facts, fs or LocalFs(), pin, proxy, host_layers)
    if isinstance(prepared, ExecResult):
        return prepared
    try:
        _fresh_scratch(prepared.wrapper.host_scratch)
    except OSError as exc:
        return refusal(request, f"cannot create the task's private temp dir: {exc}", prepared.warnings)
    try:
        return _spawn(request, prepared, facts, cancel_fd, pool)
    finally:
        _remove_scratch(prepared.wrapper.host_scratch)


def _fresh_scratch(paths: tuple[str, ...]) -> None:
    """Each private temp dir, empty and 0700 (its parents too: they sit in the agent's state dir)."""
    for path in paths:
        _remove_scratch((path,))
        os.makedirs(path, mode=0o700)


def _remove_scratch(paths: tuple[str, ...]) -> None:
    if not paths:  # only Landlock has private temp dirs: no other task pays for shutil's import
        return
    import shutil  # here: with its archive formats it costs every agent's start ~1 ms

    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _spawn(request: ExecRequest, prepared: Prepared, facts: HostFacts, cancel_fd: Optional[int],
           pool: Optional[SandboxPool]) -> ExecResult:
    wrapper = prepared.wrapper
    if wrapper.cwd and not os.path.isdir(wrapper.cwd):
        return ExecResult(id=request.id, status=Status.ERROR, backend=wrapper.backend, wrapper=wrapper.argv,
                          wrapper_files=dict(wrapper.files), warnings=prepared.warnings,
                          message=f"the working directory {wrapper.cwd} does not exist on this host")
    env = spawn.task_env({**request.env, **wrapper.env}, passthrough=prepared.env_passthrough)
    try:
        preexec = None if wrapper.backend == "none" else backend_class(wrapper.backend)(facts).preexec(wrapper)
    except Refused as exc:
        return refusal(request, f"{wrapper.backend}: {exc}", prepared.warnings)
    warnings = prepared.warnings
    limits = prepared.limits
    reused = pool.wrapper_for(wrapper, request.argv, request.timeout_s) if pool and reusable(request) else None
    bounds: Optional[Bounds] = None
    try:
        if pool is not None and reused is not None:  # one sandbox per host and policy (sandbox_pool.py)
            done, wrapper, warnings, outcome = run_reused(pool, wrapper, reused, request, env, cancel_fd, warnings,
                                                          limits, facts.limits)
        else:
            bounds = Bounds(limits, facts.limits)
            warnings = (*warnings, *bounds.warnings)
            inputs = wrapper.inputs()
            done = spawn.run(wrapper.argv, cwd=None if inputs else wrapper.cwd, env=env, timeout_s=request.timeout_s,
                             preexec=bounds.preexec(preexec), cancel_fd=cancel_fd, inputs=inputs,
                             cap=limits.output or spawn.DEFAULT_CAP, starting=bounds.starting,
                             status_fd=wrapper.status_fd)
            outcome = bounds.finish(done.rc)
            bounds = None
        failed = _start_failure(request, done)
        unprovided = _setup_failure(done)
    except spawn.ChildSetupFailed as exc:  # the sandbox could not be applied in the child: nothing ran
        return refusal(request, f"{wrapper.backend}: applying the sandbox in the child failed ({exc})",
                       prepared.warnings)
    except SandboxDied as exc:
        return ExecResult(id=request.id, status=Status.FAILED if exc.limit else Status.ERROR,
                          message=str(exc) if exc.limit else f"the sandbox ended during the task: {exc}",
                          backend=wrapper.backend, wrapper=(reused or wrapper).argv,
                          wrapper_files=dict((reused or wrapper).files), warnings=warnings, limit=exc.limit,
                          limits=limits.to_json(), limits_mechanism=facts.limits or None)
    except OSError as exc:
        return cannot_start(request, exc, reused or wrapper, warnings)
    finally:
        if bounds is not None:  # the start failed: nothing of the task may stay in its cgroup
            bounds.finish(None)
    if failed is not None:  # a fresh bwrap said its command did not start (backends/bwrap.py)
        return cannot_start(request, failed, wrapper, warnings)
    if unprovided is not None:  # a fresh bwrap could not set its sandbox up: nothing ran
        return dataclasses.replace(refusal(request, f"bwrap could not set the sandbox up, so the command did not "
                                                    f"run ({unprovided})", warnings),
                                   backend=wrapper.backend, wrapper=wrapper.argv, wrapper_files=dict(wrapper.files))
    limit = None if done.timed_out or done.cancelled else outcome.hit
    if limit is not None and done.rc == 0:  # it hit a limit and coped (a fork failed, it retried): said, not failed
        status, message, warnings = Status.OK, None, (*warnings, f"limits: {outcome.message}")
    elif limit is not None:
        status, message = Status.FAILED, outcome.message
    elif done.cancelled:
        status, message = Status.ERROR, "cancelled: the controller went away; the task's process group was killed"
    elif done.timed_out:
        status, message = Status.TIMEOUT, f"timed out after {request.timeout_s:g} s; its process group was killed"
    elif done.rc == 0:
        status, message = Status.OK, None
    else:
        status, message = Status.FAILED, exit_message(done.rc or 0, done.signal)
    return ExecResult(
        id=request.id, status=status, rc=done.rc, stdout=done.stdout, stderr=done.stderr,
        stdout_truncated=done.stdout_truncated, stderr_truncated=done.stderr_truncated,
        started=done.started, duration_ms=done.duration_ms, backend=wrapper.backend,
        wrapper=wrapper.argv, wrapper_files=dict(wrapper.files), message=message, warnings=warnings,
        limits=limits.to_json(), limits_mechanism=facts.limits or None, limit=limit,
    )


def _start_failure(request: ExecRequest, done: spawn.Completed) -> Optional[OSError]:
    """Why a command that reported a status did not start (only a fresh bwrap does: its module
    is loaded then), or None."""
    if done.status is None:
        return None
    from sandfleet_agent.backends.bwrap import start_failure

    return start_failure(request.argv[0], done.rc, done.status, done.stderr)


def _setup_failure(done: spawn.Completed) -> Optional[str]:
    """bwrap's words when a fresh bwrap could not set its sandbox up (nothing ran), or None."""
    if done.status is None or done.timed_out or done.cancelled:
        return None
    from sandfleet_agent.backends.bwrap import setup_failure

    return setup_failure(done.rc, done.status, done.stderr)


def cannot_start(request: ExecRequest, exc: OSError, ran: Wrapper, warnings: tuple[str, ...]) -> ExecResult:
    """The task's command could not start (nothing of it ran): rc 127 when it was not found
    (ENOENT), 126 for any other reason (not executable, not a regular file, bad format), as a
    shell says, on every backend (docs/events.md)."""
    return ExecResult(id=request.id, status=Status.FAILED, rc=127 if exc.errno == errno.ENOENT else 126,
                      message=f"cannot start {(exc.filename or request.argv[0])!r}: {exc.strerror}",
                      backend=ran.backend, wrapper=ran.argv, wrapper_files=dict(ran.files), warnings=warnings)


def exit_message(rc: int, signum: Optional[int]) -> str:
    """A failed task's message. ``rc`` is ``128 + N`` for a task killed by signal N on every path;
    ``signum`` is N when the agent saw the signal itself (bare, Landlock, a persistent sandbox's
    init); a fresh bwrap reports only the number, which a task could also have exited with."""
    if signum is not None:
        name = _signal_name(signum)
        return f"killed by signal {signum} ({name})" if name else f"killed by signal {signum}"
    name = _signal_name(rc - 128) if rc > 128 else None
    return f"exited with {rc} (as a task killed by signal {rc - 128}, {name}, does)" if name else f"exited with {rc}"


def _signal_name(number: int) -> Optional[str]:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def _with_proxy(request: ExecRequest, network: NetworkPolicy, facts: HostFacts,
                resolve: Optional[Mapping[str, str]], run: Callable[[ProxyEndpoint], ExecResult]) -> ExecResult:
    """Start the task's proxy, run, stop it and attach its decisions. Fails closed: no proxy, or a
    wrapper that never handed the sandbox's listener over, means nothing ran with a network."""
    # Imported here: the proxy (sockets, threads, ipaddress) is ~8 ms of every agent's start-up,
    # and most runs have no managed-network task.
    from sandfleet_agent.network.netpolicy import HostPolicy
    from sandfleet_agent.network.netproxy import ProxySession, ProxyUnavailable

    try:
        session = ProxySession(HostPolicy(network.allow, network.deny), resolve, facts.tmpdir,
                               tcp=facts.os != "linux").start()
    except ProxyUnavailable as exc:
        return refusal(request, f"managed network: {exc}; nothing ran")
    try:
        result = run(session.endpoint)
    finally:
        decisions = session.close()
    if session.handed_off:
        warnings = result.warnings
        if session.recorder.dropped:
            warnings += (f"{session.recorder.dropped} more network decisions were made than the result lists",)
        return dataclasses.replace(result, network_decisions=decisions, warnings=warnings)
    if not result.wrapper or result.status not in (Status.OK, Status.FAILED):
        return result  # refused before the spawn, or cancelled / timed out while setting up: said so already
    lines = result.stderr.strip().splitlines()
    detail = lines[-1] if lines else (result.message or "no output")
    return dataclasses.replace(result, status=Status.SANDBOX_UNAVAILABLE, message=(
        f"managed network: the sandbox's private network could not be set up, so the command did not run ({detail})"))
