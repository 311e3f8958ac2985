"""Persistent bwrap sandboxes: one per exact sandbox command, serving every task that has it.

Why: starting bwrap is the largest per-task cost left (~3.5-5 ms of CPU: a user, pid, mount and
network namespace and every mount of the plan); a task spawned inside a sandbox that is already
up costs ~0.5 ms. So the agent keeps, per host, one sandbox per *key*: the bwrap argv of the task
up to its ``--chdir`` (namespaces, capability drop, every mount), which is the bound policy as
this host realises it. A task whose policy renders to the same key enters the same sandbox; any
difference (another policy, another deny-glob match, a path that appeared) is another sandbox.

The sandbox is ``KEY --as-pid-1 --chdir / -- PYTHON -I -S -c LOADER``: its pid 1 is
:mod:`.sandbox_init`, whose code the loader reads from fd 0, the control socket. Each task is
one message on that socket: argv, env and cwd, and its stdout/stderr pipes passed as fds; the agent
reads the pipes itself and enforces the timeout by asking init to kill, in the loop every task
shares (:class:`InitTask`, a :class:`~sandfleet_agent.spawn.Runner`). :func:`persistent_wrapper`
is what a run reports and a dry-run prints.

What a reused sandbox shares between its tasks, and what it does not (tests/modules/
test_sandbox_reuse.py shows each): no process survives a task (init kills every process of the
namespace and reaps it before answering), env/cwd/fds/signal dispositions are the task's own, and
the sandbox-private state a fresh sandbox would not have (its /dev tmpfs, /dev/shm, SysV IPC,
keys, the mount table, init's limits) is emptied or, if changed, retires the sandbox before the
next task. Left as they are (documented, not leaks of data a fresh sandbox would hide): pid
numbers keep counting up; POSIX message queues of the IPC namespace cannot be listed without
mounting mqueue, so a queue a task creates and does not unlink stays reachable by name for later
tasks of the same sandbox (tasks with the same policy already share its writable paths).

A key gets its persistent sandbox from its second task on (:class:`KeyUses`): starting one costs
~11 ms of CPU on the host (Python inside bwrap; bench/agent_cost.py), against ~4 ms for one fresh
bwrap, and each task in it ~1 ms less than a fresh one, so a policy a host runs once (the common
one-task play) never pays for it.

Fallbacks: a sandbox that cannot start (the interpreter not readable under the policy, a bwrap
without ``--as-pid-1``) makes this key use a fresh sandbox per task, with a warning; a sandbox that
died between tasks is replaced; one that dies during a task fails that task with an error.
"""

from __future__ import annotations

import _socket  # not socket: ~1 ms of every agent start for a wrapper this module has no use for
import array
import contextlib
import functools
import importlib.util
import json
import marshal
import os
import select
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import IO, NoReturn, Optional

from sandfleet_agent import spawn
from sandfleet_agent.backends.base import SECCOMP_FD, STATUS_FD, Wrapper
from sandfleet_agent.bounds import AS_NOTE, Bounds, Outcome, TaskCgroup, rlimit_outcome, rlimits
from sandfleet_agent.linux import seccomp
from sandfleet_agent.portable.intent import NetworkMode
from sandfleet_agent.portable.limits import NO_LIMITS, TaskLimits
from sandfleet_agent.portable.wire import ExecRequest

#: Runs as ``python3 -I -S -c LOADER``: reads init's compiled code (the first message on fd 0, in
#: ``marshal`` form: the sandbox runs the agent's own interpreter) and runs it.
LOADER = "import os,marshal;exec(marshal.loads(os.read(0,1<<20)))"
#: Tasks of one key run in fresh sandboxes before it gets a persistent one (see the module doc).
FRESH_FIRST = 1
#: Sandboxes kept per agent (each is one small Python process); the least recently used goes first.
MAX_SANDBOXES = 8
START_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0  # how long init may take to kill and reap a task before the sandbox is dropped
ENTRY_NAME = "task, sent on fd 0 of the persistent sandbox above (one per host and sandbox command)"
STATUS_FD_WORD = "--json-status-fd"


class SandboxStartFailed(Exception):
    """This sandbox command cannot host persistent tasks here; use a fresh sandbox per task."""


def _scratch_file() -> IO[bytes]:
    """An anonymous read-write file: a memfd (Linux 3.17), else a temporary file. Not ``tempfile``
    first: importing it costs every agent's start ~1.4 ms (docs/performance.md)."""
    try:
        return os.fdopen(os.memfd_create("sandfleet-sandbox-stderr", os.MFD_CLOEXEC), "w+b")
    except (AttributeError, OSError):
        import tempfile

        return tempfile.TemporaryFile()


class SandboxDied(Exception):
    """The sandbox ended while a task ran in it; the task's outcome is unknown, unless a limit of
    the task (``limit``, e.g. the kernel's OOM killer at the memory limit) ended it."""

    def __init__(self, message: str, limit: Optional[str] = None) -> None:
        super().__init__(message)
        self.limit = limit


def split_wrapper(wrapper: Wrapper, argv: Sequence[str]) -> Optional[tuple[str, ...]]:
    """The key of a bwrap wrapper: its argv up to ``--chdir CWD -- ARGV``; None if it is not one."""
    if wrapper.backend != "bwrap" or wrapper.cwd is None:
        return None
    tail = ("--chdir", wrapper.cwd, "--", *argv)
    head = len(wrapper.argv) - len(tail)
    if head <= 0 or wrapper.argv[head:] != tail:
        return None
    return wrapper.argv[:head]


def sandbox_argv(key: Sequence[str], python: Sequence[str]) -> tuple[str, ...]:
    return (*key, "--as-pid-1", "--chdir", "/", "--", *python, "-I", "-S", "-c", LOADER)


def persistent_wrapper(wrapper: Wrapper, argv: Sequence[str], python: Sequence[str],
                       timeout_s: Optional[float] = None) -> Optional[Wrapper]:
    """The persistent form of a fresh bwrap wrapper: the sandbox's command, and the task as the
    message that enters it (shown as a file, like Landlock's ruleset). None when not reusable."""
    key = split_wrapper(wrapper, argv)
    if key is None:
        return None
    entry = json.dumps({"argv": list(argv), "cwd": wrapper.cwd, "timeout_s": timeout_s}, ensure_ascii=True)
    return replace(wrapper, argv=sandbox_argv(key, python), files={**wrapper.files, ENTRY_NAME: entry + "\n"})


@functools.cache
def _init_code() -> bytes:
    """Init's code object, marshalled. Taken through its module's loader, so Python's bytecode
    cache (``__pycache__`` beside the agent) spares the ~4.5 ms compile, in the agent and in
    every sandbox, that sending the source cost; init is never imported as a module here."""
    name = "sandfleet_agent.linux.sandbox_init"
    spec = importlib.util.find_spec(name)
    get_code = getattr(spec.loader, "get_code", None) if spec else None  # source and zip loaders have it
    code = get_code(name) if get_code else None
    if code is None:
        raise SandboxStartFailed("the sandbox init program is missing from this agent")
    return marshal.dumps(code)


class Sandbox:
    """One running persistent sandbox and its control socket."""

    _count = 0

    def __init__(self, key: tuple[str, ...], python: Sequence[str], env: Mapping[str, str],
                 sockets: Optional[str] = None, mechanism: str = "") -> None:
        self.key = key
        self.argv = sandbox_argv(key, python)
        self.served = 0  # tasks started in it
        self.mechanism = mechanism
        #: The sandbox's own cgroup (where the host has them): each task's memory and process
        #: limits are written to it before the task starts; bwrap and init count in it (two pids).
        self.cgroup: Optional[TaskCgroup] = None
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        self._stderr = _scratch_file()  # bwrap's and init's own stderr, for why a start failed
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if mechanism.startswith("cgroup"):
                Sandbox._count += 1
                self.cgroup = TaskCgroup(mechanism, f"box-{os.getpid()}-{Sandbox._count}", TaskLimits())
            inputs = {SECCOMP_FD: seccomp.program(sockets)} if sockets else {}
            starting = self.cgroup.entered() if self.cgroup is not None else contextlib.nullcontext()
            with starting:  # bwrap's status (the key's --json-status-fd) is not read here: /dev/null
                self.proc = spawn.Spawned(spawn.spawn_with_inputs(self.argv, env, theirs.fileno(), null,
                                                                  self._stderr.fileno(), inputs,
                                                                  {STATUS_FD: null} if STATUS_FD_WORD in key else {}))
        except OSError as exc:
            ours.close()
            self._stderr.close()
            if self.cgroup is not None:
                self.cgroup.remove()
            raise SandboxStartFailed(f"cannot start bwrap: {exc.strerror}") from None
        finally:
            theirs.close()
            os.close(null)
        self.sock = ours
        try:
            self.sock.send(_init_code())
            reply = self._reply(START_TIMEOUT_S)
        except (OSError, SandboxDied) as exc:
            reason = self.stderr_tail() or str(exc)
            self.close()
            raise SandboxStartFailed(f"the persistent sandbox did not start: {reason}") from None
        if reply != ["ready"]:
            self.close()
            raise SandboxStartFailed(f"the persistent sandbox did not start: {' '.join(reply)}")

    def _reply(self, timeout: Optional[float]) -> list[str]:
        if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
            raise SandboxDied("no answer from the sandbox's init")
        data = self.sock.recv(4096)
        if not data:
            raise SandboxDied("the sandbox exited")
        return data.decode("ascii", "replace").split(" ")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:  # init's end closes when it exits, a moment before bwrap does
            return not select.select([self.sock], [], [], 0)[0]
        except (OSError, ValueError):
            return False

    def stderr_tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            lines = self._stderr.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
            return lines[-1] if lines else ""
        return ""

    def run(self, argv: Sequence[str], *, cwd: str, env: Mapping[str, str], timeout_s: Optional[float],
            cancel_fd: Optional[int], cap: int, scratch: Sequence[str] = (),
            limits: TaskLimits = NO_LIMITS) -> tuple[spawn.Completed, Outcome]:
        """Run one task in this sandbox under its own ``limits``: memory and processes through the
        sandbox's cgroup (set anew before each task), the rest as rlimits init sets in the task's
        child. Raises ``OSError`` when it cannot start (nothing ran), :class:`SandboxStartFailed`
        when the sandbox retired itself or cannot take these limits (nothing ran), and
        :class:`SandboxDied` when the sandbox ended during the task."""
        message = marshal.dumps({"op": "run", "argv": [os.fsencode(a) for a in argv],
                                 "env": {os.fsencode(k): os.fsencode(v) for k, v in env.items()},
                                 "cwd": os.fsencode(cwd), "scratch": [os.fsencode(p) for p in scratch],
                                 "rlimits": list(task_rlimits(limits, self.mechanism))})
        task = InitTask(self, message, limits)
        try:
            done = task.run(timeout_s, cancel_fd, cap)
        except SandboxDied as exc:
            if not task.began:
                raise
            found = self.cgroup.outcome(task.before) if self.cgroup is not None else Outcome()
            raise SandboxDied(found.message or str(exc), found.hit) from None  # the OOM killer may have picked init
        found = self.cgroup.outcome(task.before) if self.cgroup is not None else Outcome()
        return done, found if found.hit else rlimit_outcome(limits, done.rc)

    def close(self) -> None:
        """EOF to init (it kills what runs and exits); bwrap is killed if it lingers."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.proc.wait_for(2) is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait()
        with contextlib.suppress(OSError):
            self._stderr.close()
        if self.cgroup is not None:
            self.cgroup.remove()


class InitTask(spawn.Runner):
    """One task of a sandbox, spawned by its init: its stdout and stderr are pipes handed to init,
    it is killed by asking init, and its exit status is init's ``exit`` message. Init, not the
    kernel, does the kill: if it does not answer within ``KILL_TIMEOUT_S`` the sandbox is dropped."""

    kill_timeout_s = KILL_TIMEOUT_S

    def __init__(self, box: Sandbox, message: bytes, limits: TaskLimits) -> None:
        self.box, self.message, self.limits = box, message, limits
        self.before = (0, 0)  # the cgroup's limit counters before the task
        self.began = False  # init said it started the task
        self.pipes: tuple[int, ...] = ()

    def start(self) -> tuple[int, int]:
        box = self.box
        if box.cgroup is not None:
            try:
                self.before = box.cgroup.retarget(self.limits)
            except OSError as exc:  # e.g. memory in use above the new limit: a fresh sandbox starts empty
                raise SandboxStartFailed(f"cannot set this task's limits on the sandbox's cgroup: {exc}") from None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.pipes = (out_r, err_r)
        try:
            fds = array.array("i", [out_w, err_w])
            box.sock.sendmsg([self.message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        except OSError as exc:
            raise SandboxDied(f"cannot reach the sandbox's init: {exc.strerror}") from None
        finally:
            os.close(out_w)
            os.close(err_w)
        reply = box._reply(None)
        if reply[0] == "retired":
            raise SandboxStartFailed(" ".join(reply[1:]))
        if reply[0] == "error":
            errno = int(reply[1]) if len(reply) > 1 and reply[1].isdigit() else 0
            raise OSError(errno, " ".join(reply[2:]))
        if reply[0] != "started":
            raise SandboxDied(f"unexpected answer from the sandbox's init: {' '.join(reply)[:200]}")
        box.served += 1
        self.began = True
        return out_r, err_r

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.box.sock.send(marshal.dumps({"op": "kill"}))

    def exit_fd(self) -> int:
        return self.box.sock.fileno()

    def exit_status(self) -> Optional[int]:
        data = self.box.sock.recv(4096)
        if not data:
            why = self.box.stderr_tail() or "the sandbox exited during the task"  # read before close() drops it
            self.box.close()
            raise SandboxDied(why)
        words = data.decode("ascii", "replace").split(" ")
        return int(words[1]) if words[0] == "exit" and len(words) > 1 else None

    def reap(self) -> None:
        """Nothing: init killed and reaped every process of the sandbox before it reported the exit."""

    def unresponsive(self) -> NoReturn:
        self.box.close()
        raise SandboxDied("the sandbox's init did not end the task after it was told to")

    def stop(self) -> None:
        for fd in self.pipes:
            os.close(fd)


def task_rlimits(limits: TaskLimits, mechanism: str) -> tuple[tuple[int, int], ...]:
    """The rlimits init gives a task of a persistent sandbox (the rest of its limits are the
    sandbox's cgroup's, where there is one)."""
    return tuple(rlimits(limits, mechanism or "rlimit", alone_in_userns=True))


class KeyUses:
    """Counts each key's tasks: the first ``fresh_first`` run in fresh sandboxes, later ones in
    the key's persistent sandbox. The agent's pool and the dry-run count alike, so a dry-run
    shows which task starts the persistent sandbox."""

    def __init__(self, fresh_first: int = FRESH_FIRST) -> None:
        self.fresh_first = fresh_first
        self._seen: dict[tuple[str, ...], int] = {}

    def promote(self, key: tuple[str, ...]) -> bool:
        """Count one task of ``key``; True when it is to run in the persistent sandbox."""
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        return seen >= self.fresh_first


#: A persistent sandbox's place in the pool: its key and the rlimits of every task it serves (its
#: init takes them itself where it can, so that its tasks start without a fork: sandbox_init.py).
BoxKey = tuple[tuple[str, ...], tuple[tuple[int, int], ...]]


class SandboxPool:
    """The persistent sandboxes of one agent, by key and task rlimits, least recently used
    evicted past ``limit``."""

    def __init__(self, python: Sequence[str] = (sys.executable,), limit: int = MAX_SANDBOXES,
                 fresh_first: int = FRESH_FIRST) -> None:
        self.python, self.limit = tuple(python), limit
        self._boxes: OrderedDict[BoxKey, Sandbox] = OrderedDict()
        self._failed: dict[tuple[str, ...], str] = {}
        self._sockets: dict[tuple[str, ...], Optional[str]] = {}  # each key's seccomp socket mode
        self._mechanisms: dict[tuple[str, ...], str] = {}  # each key's limits mechanism (HostFacts.limits)
        self._uses = KeyUses(fresh_first)

    def wrapper_for(self, wrapper: Wrapper, argv: Sequence[str], timeout_s: Optional[float]) -> Optional[Wrapper]:
        """The persistent form of ``wrapper`` if this pool runs this task so, else None (counts
        the task: call it once per task)."""
        key = split_wrapper(wrapper, argv)
        if key is None or key in self._failed or not self._uses.promote(key):
            return None
        return persistent_wrapper(wrapper, argv, self.python, timeout_s)

    def run(self, wrapper: Wrapper, argv: Sequence[str], *, env: Mapping[str, str], timeout_s: Optional[float],
            cancel_fd: Optional[int], cap: int = spawn.DEFAULT_CAP, limits: TaskLimits = NO_LIMITS,
            mechanism: str = "rlimit") -> tuple[spawn.Completed, Outcome]:
        """Run ``argv`` in the sandbox for ``wrapper`` under ``limits``. Raises
        :class:`SandboxStartFailed` (use a fresh sandbox), :class:`SandboxDied` or ``OSError``
        (the command could not start)."""
        key = split_wrapper(wrapper, argv)
        if key is None or wrapper.cwd is None:
            raise SandboxStartFailed("not a bwrap wrapper this pool can reuse")
        if key in self._failed:
            raise SandboxStartFailed(self._failed[key])
        self._sockets[key] = wrapper.seccomp
        self._mechanisms[key] = mechanism
        box_key = (key, task_rlimits(limits, mechanism))
        for attempt in (1, 2):
            box = self._get(box_key)
            try:
                return box.run(argv, cwd=wrapper.cwd, env=env, timeout_s=timeout_s, cancel_fd=cancel_fd, cap=cap,
                               scratch=wrapper.sandbox_scratch, limits=limits)
            except SandboxStartFailed:  # it retired itself before running anything: once more, fresh
                self._drop(box_key)
                if attempt == 2:
                    raise
            except SandboxDied:
                self._drop(box_key)
                raise
        raise AssertionError("unreachable")

    def _get(self, box_key: BoxKey) -> Sandbox:
        box = self._boxes.get(box_key)
        if box is not None and not box.alive():
            self._drop(box_key)
            box = None
        key = box_key[0]
        if box is None:
            try:
                box = Sandbox(key, self.python, spawn.task_env({}), self._sockets.get(key),
                              self._mechanisms.get(key, "rlimit"))
            except SandboxStartFailed as exc:
                self._failed[key] = str(exc)
                raise
            self._boxes[box_key] = box
            while len(self._boxes) > self.limit:
                self._drop(next(iter(self._boxes)))
        self._boxes.move_to_end(box_key)
        return box

    def _drop(self, box_key: BoxKey) -> None:
        box = self._boxes.pop(box_key, None)
        if box is not None:
            box.close()

    def pids(self) -> tuple[int, ...]:
        """The processes of the sandboxes kept up (children of the agent that are not tasks)."""
        return tuple(box.proc.pid for box in self._boxes.values())

    def close(self) -> None:
        for box_key in list(self._boxes):
            self._drop(box_key)


def reusable(request: ExecRequest) -> bool:
    """Tasks that may share a sandbox: sandboxed, and not on a managed network (whose proxy is per
    task: those keep a fresh sandbox each)."""
    return request.sandbox is not None and request.sandbox.network.mode is not NetworkMode.MANAGED


def run_reused(pool: SandboxPool, fresh: Wrapper, reused: Wrapper, request: ExecRequest, env: Mapping[str, str],
               cancel_fd: Optional[int], warnings: tuple[str, ...], limits: TaskLimits, mechanism: str,
               ) -> tuple[spawn.Completed, Wrapper, tuple[str, ...], Outcome]:
    """Run ``request`` in its persistent sandbox; in a fresh one, with a warning saying why, when
    this host cannot keep one for it. Returns what ran, the wrapper that ran it, the warnings and
    what the task's limits did."""
    cap = limits.output or spawn.DEFAULT_CAP
    note = AS_NOTE if mechanism == "rlimit" and limits.memory is not None else None
    try:
        done, outcome = pool.run(fresh, request.argv, env=env, timeout_s=request.timeout_s, cancel_fd=cancel_fd,
                                 cap=cap, limits=limits, mechanism=mechanism)
        return done, reused, (*warnings, *([note] if note else [])), outcome
    except SandboxStartFailed as exc:
        fallback = f"bwrap: ran in a fresh sandbox, not the persistent one ({exc})"
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, request.argv[0]) from None
    bounds = Bounds(limits, mechanism)
    rc: Optional[int] = None
    try:
        done = spawn.run(fresh.argv, cwd=None, env=env, timeout_s=request.timeout_s, cancel_fd=cancel_fd,
                         inputs=fresh.inputs(), cap=cap, preexec=bounds.preexec(None), starting=bounds.starting,
                         status_fd=fresh.status_fd)
        rc = done.rc
    finally:
        outcome = bounds.finish(rc)  # on a failed start too: nothing may stay in its cgroup
    return done, fresh, (*warnings, *bounds.warnings, fallback), outcome
