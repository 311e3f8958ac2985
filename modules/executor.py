"""One request in, one result out: bind, choose, render, spawn (DESIGN §6).

:func:`prepare` is everything up to the spawn and is what a dry-run calls with assumed facts, so
the wrapper a dry-run prints is the wrapper a run executes. Anything that cannot be enforced
comes back as a ``sandbox_unavailable`` result before a single process starts.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Optional, Union

from . import spawn
from .backends import Refused, Wrapper, backend_class, wrap
from .backends.base import Bare
from .binding import BindError, FsView, LocalFs, bind, bind_cwd, workspace_roots
from .facts import HostFacts
from .wire import ExecRequest, ExecResult, Status


@dataclass(frozen=True)
class Prepared:
    wrapper: Wrapper
    warnings: tuple[str, ...] = ()


def refusal(request: ExecRequest, message: str, warnings: tuple[str, ...] = ()) -> ExecResult:
    return ExecResult(id=request.id, status=Status.SANDBOX_UNAVAILABLE, message=message, warnings=warnings)


def prepare(
    request: ExecRequest, facts: HostFacts, fs: FsView, pin: Optional[str] = None
) -> Union[Prepared, ExecResult]:
    """The exact wrapper for ``request`` on this host, or the result that refuses it."""
    if request.sandbox is None:
        try:
            cwd = bind_cwd(request.cwd, workspace_roots(None, facts), facts, fs)
        except BindError as exc:
            return ExecResult(id=request.id, status=Status.ERROR, message=str(exc))
        return Prepared(Bare(facts).render_bare(request.argv, cwd))
    try:
        policy = bind(request.sandbox, facts, request.cwd, fs)
    except BindError as exc:
        return refusal(request, f"sandbox intent cannot be bound on this host: {exc}")
    try:
        wrapper = wrap(policy, request.argv, facts, pin)
    except Refused as exc:
        return refusal(request, str(exc), policy.warnings)
    return Prepared(wrapper, policy.warnings + wrapper.notes)


def execute(
    request: ExecRequest, facts: HostFacts, pin: Optional[str] = None, fs: Optional[FsView] = None,
    cancel_fd: Optional[int] = None,
) -> ExecResult:
    prepared = prepare(request, facts, fs or LocalFs(), pin)
    if isinstance(prepared, ExecResult):
        return prepared
    wrapper = prepared.wrapper
    if wrapper.cwd and not os.path.isdir(wrapper.cwd):
        return ExecResult(id=request.id, status=Status.ERROR, backend=wrapper.backend, wrapper=wrapper.argv,
                          message=f"the working directory {wrapper.cwd} does not exist on this host",
                          warnings=prepared.warnings)
    env = spawn.task_env({**request.env, **wrapper.env})
    try:
        preexec = None if wrapper.backend == "none" else backend_class(wrapper.backend)(facts).preexec(wrapper)
    except Refused as exc:
        return refusal(request, f"{wrapper.backend}: {exc}", prepared.warnings)
    try:
        done = spawn.run(wrapper.argv, cwd=wrapper.cwd, env=env, timeout_s=request.timeout_s, preexec=preexec,
                         cancel_fd=cancel_fd)
    except subprocess.SubprocessError as exc:  # the sandbox could not be applied in the child: nothing ran
        return refusal(request, f"{wrapper.backend}: applying the sandbox in the child failed ({exc})",
                       prepared.warnings)
    except OSError as exc:
        return ExecResult(id=request.id, status=Status.FAILED, rc=127 if exc.errno == 2 else 126,
                          message=f"cannot start {wrapper.argv[0]!r}: {exc.strerror}",
                          backend=wrapper.backend, wrapper=wrapper.argv, warnings=prepared.warnings)
    if done.cancelled:
        status, message = Status.ERROR, "cancelled: the controller went away; the task's process group was killed"
    elif done.timed_out:
        status, message = Status.TIMEOUT, f"timed out after {request.timeout_s:g} s; its process group was killed"
    elif done.rc == 0:
        status, message = Status.OK, None
    else:
        rc = done.rc or 0
        status, message = Status.FAILED, f"exited with {rc}" if rc >= 0 else f"killed by signal {-rc}"
    return ExecResult(
        id=request.id, status=status, rc=done.rc, stdout=done.stdout, stderr=done.stderr,
        stdout_truncated=done.stdout_truncated, stderr_truncated=done.stderr_truncated,
        started=done.started, duration_ms=done.duration_ms, backend=wrapper.backend,
        wrapper=wrapper.argv, message=message, warnings=prepared.warnings,
    )

