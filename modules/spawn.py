"""Start one command and collect what it did: no shell, its own process group, a hard timeout.

stdout and stderr are drained together with a selector (a pipe that fills up would otherwise
stall the child), each capped to its last ``cap`` bytes with a truncated flag. On timeout, and
when the command itself exits, the whole process group is killed, so nothing it forked outlives
the task or holds its pipes open.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Optional

DEFAULT_CAP = 1 << 20  # 1 MiB per stream
GRACE_S = 1.0  # how long leftover writers may keep a pipe open after the command exited

#: Variables a command inherits from the agent's environment; everything else it must be given.
#: Keeps the controller's or agent's secrets (SSH_AUTH_SOCK, tokens) out of untrusted commands.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR", "SHELL")


@dataclass(frozen=True)
class Completed:
    """What a finished command left: its exit code, its output (capped), whether it was stopped
    (timeout, cancel) and when it ran."""

    rc: Optional[int]
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    cancelled: bool
    started: str
    duration_ms: int


class Capped:
    """Keeps the last ``cap`` bytes of a stream: the end of a log is where the error is."""

    def __init__(self, cap: int) -> None:
        self.cap, self.buf, self.truncated = cap, bytearray(), False

    def add(self, chunk: bytes) -> None:
        self.buf += chunk
        if len(self.buf) > self.cap:
            del self.buf[: len(self.buf) - self.cap]
            self.truncated = True

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


def utc_now() -> str:
    """When a task started, as the results carry it (ISO 8601, UTC, milliseconds). Built with
    ``time``: ``datetime`` would add ~1 ms to every agent's start for this one string."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns // 1_000_000 % 1000:03d}Z"


def task_env(extra: Mapping[str, str], base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    source = os.environ if base is None else base
    env = {k: source[k] for k in INHERITED_ENV if k in source}
    env.update({k: v for k, v in source.items() if k.startswith("LC_")})
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra)
    return env


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run(
    argv: Sequence[str],
    *,
    cwd: Optional[str],
    env: Mapping[str, str],
    timeout_s: Optional[float] = None,
    preexec: Optional[Callable[[], None]] = None,
    cap: int = DEFAULT_CAP,
    pass_fds: Sequence[int] = (),
    cancel_fd: Optional[int] = None,
) -> Completed:
    """Run ``argv`` to completion. Raises ``OSError`` when it cannot start (caller reports it).

    ``cancel_fd`` (the agent's stdin) is watched while the command runs: the controller sends
    nothing during a task, so anything there, EOF included, means it is gone or wants the task
    stopped, and the command's process group is killed.
    """
    started = utc_now()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True, close_fds=True, preexec_fn=preexec,
        pass_fds=tuple(pass_fds),
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Capped(cap), Capped(cap)
    sinks = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    deadline = None if timeout_s is None else t0 + timeout_s
    timed_out = cancelled = False
    exited_at: Optional[float] = None
    with selectors.DefaultSelector() as sel:
        for stream in (proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        if cancel_fd is not None:
            sel.register(cancel_fd, selectors.EVENT_READ)
        while len(sel.get_map()) > (0 if cancel_fd is None else 1):
            now = time.monotonic()
            if deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                _killpg(proc.pid)
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                _killpg(proc.pid)  # what the task left running dies with it
            if exited_at is not None and now - exited_at > GRACE_S:
                break  # a writer left the process group; stop waiting for it
            wait = 0.05
            if deadline is not None and not timed_out:
                wait = max(0.0, min(wait, deadline - now))
            for key, _ in sel.select(wait):
                if key.fd == cancel_fd:
                    sel.unregister(cancel_fd)
                    cancelled = True
                    _killpg(proc.pid)
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    sinks[key.fd].add(chunk)
                else:
                    sel.unregister(key.fileobj)
    rc = proc.wait()
    _killpg(proc.pid)
    proc.stdout.close()
    proc.stderr.close()
    return Completed(
        rc=None if timed_out else rc,
        stdout=out.text(),
        stderr=err.text(),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        timed_out=timed_out,
        cancelled=cancelled,
        started=started,
        duration_ms=int((time.monotonic() - t0) * 1000),
    )
