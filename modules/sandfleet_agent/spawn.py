"""Start one command and collect what it did: no shell, its own process group, a hard timeout.

:class:`Runner` is the one loop that watches a task to its end, whatever runs it: a process of
this agent (:class:`Process`: bare, a fresh bwrap, Landlock) or a task of a persistent sandbox's
init (``linux/sandbox_pool.py``). stdout and stderr are drained together (a pipe that fills up
would otherwise stall the child), each capped to its last ``cap`` bytes with a truncated flag;
the deadline and the cancel descriptor kill the task; once it exited, what it left running is
killed too, so nothing it forked outlives the task or holds its pipes open.

``inputs`` hands the child extra data on fixed descriptor numbers (bwrap reads its seccomp
filter from fd 3): each is a pipe filled before the start. Such a command is started with
``posix_spawn``, whose file actions place the pipes on their numbers; ``subprocess`` would
need a ``preexec_fn`` for that, which doubles the cost of every start (~0.9 ms more, measured).
``status_fd`` is the other direction: a pipe the child may write a short report on (bwrap's
``--json-status-fd``), read once the command has ended.

Exit codes are the shell's, on every path: a command killed by signal N exits ``128 + N``
(``Completed.signal`` says N when this side saw the signal, rather than a command that exited
with that number); 127 and 126 are for a command that could not start (the caller's ``OSError``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import signal
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Callable, NoReturn, Optional, Union

if TYPE_CHECKING:  # imported where used: a bwrap-only run never needs it (~1.7 ms, docs/performance.md)
    import subprocess

DEFAULT_CAP = 1 << 20  # 1 MiB per stream
GRACE_S = 1.0  # how long leftover writers may keep a pipe open after the command exited
POLL_S = 0.05  # how often an exit that no descriptor announces is looked for (at most)
#: poll(2) where there is one: a task's few descriptors need no kernel object made, filled and torn
#: down (epoll: ~8 system calls more per task), and may be numbered above select's 1024.
_Selector = getattr(selectors, "PollSelector", selectors.DefaultSelector)

#: Variables a command inherits from the agent's environment (with every ``LC_*``); everything
#: else it must be given (``env``/``environment``) or the operator must pass through (the
#: policy's ``env_passthrough``: :func:`task_env`'s ``passthrough``). Keeps the controller's or
#: agent's secrets (SSH_AUTH_SOCK, tokens) out of untrusted commands.
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
    #: The signal that ended the command (its ``rc`` is then ``128 + signal``), when seen here.
    signal: Optional[int] = None
    #: What the command wrote on its ``status_fd`` (:func:`run`); None when it was given none.
    status: Optional[bytes] = None


def shell_rc(code: int) -> tuple[int, Optional[int]]:
    """``(rc, signal)`` for a wait status as ``os.waitstatus_to_exitcode`` gives it (negative:
    killed by that signal): the shell's ``128 + N`` for a signal, as bwrap reports its command's.
    On Windows a negative code is the process's own (an NTSTATUS), kept as it is."""
    return (128 - code, -code) if code < 0 and os.name == "posix" else (code, None)


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


def task_env(extra: Mapping[str, str], base: Optional[Mapping[str, str]] = None,
             passthrough: Collection[str] = ()) -> dict[str, str]:
    """A task's environment: :data:`INHERITED_ENV`, ``LC_*`` and the ``passthrough`` names the
    policy allows, as the agent has them (``base``), then ``extra`` (the task's own, which wins)."""
    source = os.environ if base is None else base
    env = dict(_agent_inherited()) if base is None else _inherited(source)
    env.update({k: source[k] for k in passthrough if k in source})
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra)
    return env


def _inherited(source: Mapping[str, str]) -> dict[str, str]:
    """What every task inherits of ``source``: :data:`INHERITED_ENV` and ``LC_*``."""
    env = {k: source[k] for k in INHERITED_ENV if k in source}
    env.update({k: v for k, v in source.items() if k.startswith("LC_")})
    return env


#: The agent's environment as it last was (``os.environ``'s own data, copied) and
#: :func:`_inherited` of it.
_last_inherited: Optional[tuple[dict[object, object], dict[str, str]]] = None


def _agent_inherited() -> dict[str, str]:
    """:func:`_inherited` of ``os.environ``, recomputed only when its data changed: walking
    ``os.environ`` decodes every variable, ~0.05 ms a task in an agent (docs/performance.md "Host
    side: each task"), while comparing its raw data with a copy is ~1 us. Equal raw data decode
    to equal variables. Do not change the dict returned."""
    global _last_inherited
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):  # not CPython's os._Environ: no raw data to compare
        return _inherited(os.environ)
    last = _last_inherited
    if last is not None and last[0] == data:
        return last[1]
    snapshot = dict(data)  # copied before reading: a change made meanwhile is seen next time
    env = _inherited(os.environ)
    _last_inherited = (snapshot, env)
    return env


#: Process-group kills end what a task left in its own session; a task that called ``setsid`` (a
#: daemon) is out of reach of that. The agent is therefore a child subreaper: every orphan of a
#: task is re-parented to it, and :func:`kill_orphans` ends them all after each task. bwrap
#: tasks need none of this (their pid namespace dies with them), Landlock and bare ones do.
PR_SET_CHILD_SUBREAPER = 36
KEYCTL_JOIN_SESSION_KEYRING = 1
_KEYCTL_NR = {"x86_64": 250, "aarch64": 219}
ORPHAN_ROUNDS = 200


def harden_agent() -> list[str]:
    """Linux: make this process a child subreaper and give it a fresh, empty session keyring
    (never the controller's or the login's, whose keys its tasks could otherwise reach). What
    could not be done is returned as warnings: neither is needed for the sandboxes to hold."""
    if os.uname().sysname != "Linux":
        return []
    from sandfleet_agent.linux.libc import function, get_errno  # not ctypes: ~1.5 ms of every start

    problems = []
    if function("prctl")(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        problems.append(f"cannot become a child subreaper: {os.strerror(get_errno())}")
    nr = _KEYCTL_NR.get(os.uname().machine)
    if nr is not None and function("syscall")(nr, KEYCTL_JOIN_SESSION_KEYRING, None) < 0 \
            and get_errno() not in (38,):  # ENOSYS: a kernel without keyrings has nothing to leak
        problems.append(f"cannot join a fresh session keyring: {os.strerror(get_errno())}")
    return problems


def _children() -> set[int]:
    """This process's children, from every thread's ``children`` list (re-parented orphans go to
    whichever thread; needs CONFIG_PROC_CHILDREN, present on every mainstream kernel)."""
    found: set[int] = set()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as fh:
                found.update(int(word) for word in fh.read().split())
        except OSError:
            continue
    return found


def kill_orphans(keep: Collection[int] = ()) -> int:
    """SIGKILL and reap every child of this process but ``keep`` (the persistent sandboxes), and
    again for each orphan that is re-parented to it meanwhile, until none is left. Returns how
    many were killed."""
    killed = 0
    for _ in range(ORPHAN_ROUNDS):
        children = _children() - set(keep)
        if not children:
            return killed
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        killed += len(children)
    return killed


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Spawned:
    """A child started with ``posix_spawn``, with the two methods of ``Popen`` the loop uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait_for(self, timeout: float) -> Optional[int]:
        """Its exit status once it exits within ``timeout`` seconds, else None (still running).

        Woken by the exit itself where a pidfd exists (Linux 5.3): polling every 10 ms kept each
        agent ~5 ms longer at its end, waiting for its persistent sandboxes (docs/performance.md)."""
        deadline = time.monotonic() + timeout
        if self.poll() is None:
            fd = _pidfd(self.pid)
            if fd >= 0:  # else (no pidfd here) the polling below
                try:
                    with selectors.DefaultSelector() as sel:
                        sel.register(fd, selectors.EVENT_READ)  # readable once the process has exited
                        sel.select(timeout)
                finally:
                    os.close(fd)
        while self.poll() is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if timeout is not None and self.wait_for(timeout) is None:
            import subprocess  # Popen's exception, as a Popen's wait() raises it

            raise subprocess.TimeoutExpired([str(self.pid)], timeout)
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


def input_pipe(data: bytes) -> int:
    """A pipe's read end holding ``data`` (written whole first: the filters are a few KiB, far
    below a pipe's 64 KiB, so this never blocks)."""
    r, w = os.pipe()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(w, view):]
    finally:
        os.close(w)
    return r


def _close_strays_on_exec() -> None:
    """``posix_spawn`` keeps every descriptor not marked close-on-exec (``Popen`` closes them
    all): mark any such stray (one inherited by this process, or made with ``dup2``) first, so
    nothing but the file actions' descriptors reaches the sandbox."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


def spawn_with_inputs(argv: Sequence[str], env: Mapping[str, str], stdin: int, stdout: int, stderr: int,
                      inputs: Mapping[int, bytes], outputs: Optional[Mapping[int, int]] = None) -> int:
    """``posix_spawn`` ``argv`` (searched in ``env``'s PATH) in a new session, with ``stdin``,
    ``stdout``, ``stderr``, each of ``inputs`` on its number and each descriptor of ``outputs``
    (number: descriptor) placed on its number, last. Raises ``OSError``."""
    _close_strays_on_exec()
    pipes = {number: input_pipe(data) for number, data in inputs.items()}
    try:
        actions = [(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
                   (os.POSIX_SPAWN_DUP2, stderr, 2)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, number) for number, fd in sorted(pipes.items())]
        actions += [(os.POSIX_SPAWN_DUP2, fd, number) for number, fd in sorted((outputs or {}).items())]
        encoded = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
        return os.posix_spawnp(argv[0], list(argv), encoded, file_actions=actions, setsid=True)
    finally:
        for fd in pipes.values():
            os.close(fd)


class Runner:
    """Watches one task to its end; the recipe every way of running a task shares, so that all
    give the same results (exit codes, truncation, timeout, cancel).

    stdout and stderr are drained together, each capped to its last ``cap`` bytes. Past
    ``timeout_s`` the task is killed and reported timed out, with no exit code; anything on
    ``cancel_fd`` (EOF included) kills it and marks it cancelled. The watch ends once both streams
    are closed and the exit status is known, or ``GRACE_S`` after the exit when a writer the task
    left holds a pipe open. How each step is done is the subclass's: :meth:`start` (the read ends
    of the task's stdout and stderr), :meth:`kill`, :meth:`exit_fd` and :meth:`exit_status` (how
    the exit is learned), :meth:`reap` (what the exited task left) and :meth:`stop` (always, last).
    """

    #: How long a killed task may take to report its exit before :meth:`unresponsive`; None: as
    #: long as it takes.
    kill_timeout_s: Optional[float] = None

    def start(self) -> tuple[int, int]:
        """Start the task; the read ends of its stdout and stderr. Raises ``OSError`` when it
        cannot start (nothing ran)."""
        raise NotImplementedError

    def kill(self) -> None:
        """Kill the task and everything it started."""
        raise NotImplementedError

    def exit_fd(self) -> Optional[int]:
        """A descriptor that turns readable when :meth:`exit_status` may have news; None: poll."""
        raise NotImplementedError

    def exit_status(self) -> Optional[int]:
        """The task's exit as ``os.waitstatus_to_exitcode`` gives it, or None while it runs."""
        raise NotImplementedError

    def reap(self) -> None:
        """The task exited: end what it left running."""

    def unresponsive(self) -> NoReturn:
        """The task was killed and did not report its exit within ``kill_timeout_s``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Release what :meth:`start` took, however far it got."""

    def run(self, timeout_s: Optional[float], cancel_fd: Optional[int], cap: int) -> Completed:
        """Start the task and watch it to its end."""
        started, t0 = utc_now(), time.monotonic()
        try:
            return self._watch(self.start(), started, t0, timeout_s, cancel_fd, cap)
        finally:
            self.stop()

    def _watch(self, streams: tuple[int, int], started: str, t0: float, timeout_s: Optional[float],
               cancel_fd: Optional[int], cap: int) -> Completed:
        out, err = Capped(cap), Capped(cap)
        sinks = {streams[0]: out, streams[1]: err}
        exit_fd = self.exit_fd()
        code: Optional[int] = None
        timed_out = cancelled = killed = False
        due = None if timeout_s is None else t0 + timeout_s  # when to act next: deadline, kill, grace
        nap = 0.001
        with _Selector() as sel:
            for fd in streams:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            for watched in (exit_fd, cancel_fd):
                if watched is not None:
                    sel.register(watched, selectors.EVENT_READ)
            while sinks or code is None:
                now = time.monotonic()
                if due is not None and now >= due:
                    if code is not None:
                        break  # a writer the task left holds a pipe: stop waiting for it
                    if killed:
                        self.unresponsive()
                    killed, timed_out = True, not cancelled
                    self.kill()
                    due = None if self.kill_timeout_s is None else now + self.kill_timeout_s
                wait = None if due is None else max(0.0, due - now)
                if code is None and exit_fd is None:  # nothing announces the exit: poll for it, from
                    tick = POLL_S if sinks else nap  # 1 ms up once the pipes closed (the exit follows)
                    nap = nap if sinks else min(nap * 2, POLL_S)
                    wait = tick if wait is None else min(wait, tick)
                exit_ready = exit_fd is None
                for key, _ in sel.select(wait):
                    if key.fd == exit_fd:
                        exit_ready = True
                    elif key.fd == cancel_fd:
                        sel.unregister(key.fd)
                        cancelled = True
                        due = now if code is None and not killed else due  # kill it now, if still to do
                    elif chunk := os.read(key.fd, 65536):
                        sinks[key.fd].add(chunk)
                    else:
                        sel.unregister(key.fd)
                        del sinks[key.fd]
                if code is None and exit_ready:
                    code = self.exit_status()
                    if code is not None:
                        self.reap()
                        due = time.monotonic() + GRACE_S
                        if exit_fd is not None:
                            sel.unregister(exit_fd)
        assert code is not None
        rc, signum = (None, None) if timed_out else shell_rc(code)
        return Completed(rc=rc, signal=signum, stdout=out.text(), stderr=err.text(), stdout_truncated=out.truncated,
                         stderr_truncated=err.truncated, timed_out=timed_out, cancelled=cancelled, started=started,
                         duration_ms=int((time.monotonic() - t0) * 1000))


class Process(Runner):
    """A task that is a process of this agent (bare, a fresh bwrap, Landlock): in its own session,
    killed as a process group by the kernel (so no kill timeout: a SIGKILL always lands), its exit
    announced by a pidfd where the kernel has them (Linux 5.3), else polled."""

    def __init__(self, argv: Sequence[str], *, cwd: Optional[str], env: Mapping[str, str],
                 preexec: Optional[Callable[[], None]] = None, pass_fds: Sequence[int] = (),
                 inputs: Optional[Mapping[int, bytes]] = None,
                 starting: Optional[Callable[[], contextlib.AbstractContextManager[object]]] = None,
                 status_fd: Optional[int] = None) -> None:
        self.argv, self.cwd, self.env, self.preexec, self.pass_fds = argv, cwd, env, preexec, pass_fds
        self.inputs, self.starting, self.status_fd = inputs, starting, status_fd
        self.proc: Optional[Union[subprocess.Popen[bytes], Spawned]] = None
        self.streams: tuple[IO[bytes], ...] = ()
        self.pidfd = self.status_r = -1

    def run(self, timeout_s: Optional[float], cancel_fd: Optional[int], cap: int) -> Completed:
        try:
            done = super().run(timeout_s, cancel_fd, cap)
            return done if self.status_r < 0 else dataclasses.replace(done, status=_drain(self.status_r))
        finally:
            if self.status_r >= 0:
                os.close(self.status_r)

    def start(self) -> tuple[int, int]:
        outputs: dict[int, int] = {}
        if self.status_fd is not None:
            self.status_r, outputs[self.status_fd] = _high_pipe()
        try:
            with (self.starting or contextlib.nullcontext)():
                self.proc, self.streams = _start(self.argv, self.cwd, self.env, self.preexec, self.pass_fds,
                                                 self.inputs, outputs)
        finally:
            for fd in outputs.values():
                os.close(fd)
        self.pidfd = _pidfd(self.proc.pid)
        return self.streams[0].fileno(), self.streams[1].fileno()

    def kill(self) -> None:
        assert self.proc is not None
        _killpg(self.proc.pid)

    def exit_fd(self) -> Optional[int]:
        return self.pidfd if self.pidfd >= 0 else None

    def exit_status(self) -> Optional[int]:
        assert self.proc is not None
        return self.proc.poll()

    def reap(self) -> None:
        self.kill()  # what the task left running in its group dies with it

    def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:  # the watch failed: nothing may stay
            _killpg(self.proc.pid)
            self.proc.wait()
        for stream in self.streams:
            stream.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)


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
    inputs: Optional[Mapping[int, bytes]] = None,
    starting: Optional[Callable[[], contextlib.AbstractContextManager[object]]] = None,
    status_fd: Optional[int] = None,
) -> Completed:
    """Run ``argv`` to completion. Raises ``OSError`` when it cannot start (caller reports it).

    ``cancel_fd`` (the agent's stdin) is watched while the command runs: the controller sends
    nothing during a task, so anything there, EOF included, means it is gone or wants the task
    stopped, and the command's process group is killed. ``status_fd`` is a descriptor number on
    which the command may write a short report (a few KiB at most: it is read after the command
    ended), returned as ``Completed.status``.
    """
    return Process(argv, cwd=cwd, env=env, preexec=preexec, pass_fds=pass_fds, inputs=inputs, starting=starting,
                   status_fd=status_fd).run(timeout_s, cancel_fd, cap)


def _pidfd(pid: int) -> int:
    """A descriptor readable once ``pid`` (a child not yet reaped) exits; -1 where there is none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        return -1


def _high_pipe() -> tuple[int, int]:
    """A close-on-exec pipe whose ends are numbered 10 or more, so that placing other descriptors
    on the low fixed numbers (3, 4) in the child never overwrites one of them first."""
    import fcntl  # here: this module is imported on Windows too

    ends = os.pipe()
    try:
        return fcntl.fcntl(ends[0], fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(ends[1], fcntl.F_DUPFD_CLOEXEC, 10)
    finally:
        for fd in ends:
            os.close(fd)


def _drain(fd: int) -> bytes:
    """What is in the pipe ``fd`` now, without waiting for a writer that may still hold it."""
    os.set_blocking(fd, False)
    data = bytearray()
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    return bytes(data)


class ChildSetupFailed(Exception):
    """A child-side hook (a sandbox applied in the child, rlimits) failed after the fork: the
    command never ran."""


def _start(argv: Sequence[str], cwd: Optional[str], env: Mapping[str, str], preexec: Optional[Callable[[], None]],
           pass_fds: Sequence[int], inputs: Optional[Mapping[int, bytes]], outputs: Mapping[int, int],
           ) -> tuple[Union[subprocess.Popen[bytes], Spawned], tuple[IO[bytes], IO[bytes]]]:
    """Start the command: ``posix_spawn`` when it only needs its inputs and outputs on fixed
    descriptors, else ``Popen`` (a ``preexec`` then also places them, in the child)."""
    proc: Union[subprocess.Popen[bytes], Spawned]
    if (inputs or outputs) and preexec is not None:
        pipes = {number: input_pipe(data) for number, data in (inputs or {}).items()}
        then = preexec

        def place_inputs() -> None:
            for number, fd in [*pipes.items(), *outputs.items()]:
                os.dup2(fd, number)
            then()
        try:
            return _start(argv, cwd, env, place_inputs,
                          (*pass_fds, *pipes.values(), *pipes, *outputs.values(), *outputs), None, {})
        finally:
            for fd in pipes.values():
                os.close(fd)
    if inputs or outputs:
        if pass_fds or cwd is not None:
            raise ValueError("inputs go with a command that needs no pass_fds or cwd (bwrap)")
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            proc = Spawned(spawn_with_inputs(argv, env, null, out_w, err_w, inputs or {}, outputs))
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            for fd in (null, out_w, err_w):
                os.close(fd)
        return proc, (os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0))
    import subprocess

    try:
        popen = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True, preexec_fn=preexec,
            pass_fds=tuple(pass_fds),
        )
    except subprocess.SubprocessError as exc:  # the preexec hook raised in the child: nothing ran
        raise ChildSetupFailed(str(exc)) from exc
    assert popen.stdout is not None and popen.stderr is not None
    return popen, (popen.stdout, popen.stderr)
