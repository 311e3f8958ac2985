"""pid 1 of a persistent bwrap sandbox: runs the agent's tasks one at a time, and leaves nothing
of one task behind for the next.

Why: a fresh ``bwrap`` per task costs ~3.5-5 ms of mostly CPU (namespaces, mounts); a sandbox
that stays up and spawns each task inside costs ~0.5 ms. This program is what stays up. It is
not imported: the agent (:mod:`.sandbox_pool`) starts ``bwrap ... --as-pid-1 -- python3 -I -S
-c LOADER``, and LOADER reads this file's compiled code as the first message on fd 0 and runs it, so
nothing of sandfleet has to be readable inside the sandbox. Hence stdlib only, C modules where a
pure-Python one would import much more (``_signal``, ``_socket``), and Python 3.9.

Protocol on fd 0 (a SOCK_SEQPACKET socket; one message each):

* agent → init: ``marshal`` dicts (the agent is the trusted side). ``{"op": "run", "argv":
  [bytes], "env": {bytes: bytes}, "cwd": bytes, "scratch": [bytes], "rlimits": [(resource,
  value)]}`` with the task's stdout and stderr write ends as SCM_RIGHTS; ``{"op": "kill"}`` while
  a task runs (timeout or cancel).
* init → agent: ASCII words, never parsed as code: ``ready``; ``started PID``; ``error ERRNO
  TEXT`` (nothing ran); ``exit STATUS`` (``os.waitstatus_to_exitcode``: negative = signal);
  ``retired WHY`` (the sandbox is no longer as it started; nothing ran and init exits).

Between tasks, as pid 1 of the pid namespace: every leftover process is killed (``kill(-1)``
spares only pid 1) and reaped, so nothing a task started (daemonised or not) survives it, and its
pipes close with it; the directories the run message names are emptied: the sandbox's own
``/dev/shm`` and ``/dev/mqueue`` (POSIX message queues) and the task's private temp dir, each
only where the sandbox made it (never a host directory a policy bound there), and never across a
mount inside it (a workspace below the private temp dir is the host's). Before each task the sandbox is
compared with its state at start (:func:`_state`): the private ``/dev`` tmpfs with every entry's
extended attributes, the mount table, SysV IPC objects, keys, the host and domain name, this
process's limits and scheduling (which a task could change with ``prlimit``/``renice``), and the
private temp dirs' own mode, owner and attributes. Any difference retires the sandbox; the agent
then runs the task in a fresh one. Tasks cannot signal, ptrace or read this process: pid 1 of a namespace only receives
signals it handles (just SIGCHLD, which merely wakes it), and it is made non-dumpable.

A task's rlimits (soft and hard, so it cannot raise them) are set in a fork of this process
before the exec, or, where this process can live under them itself (:func:`_adoptable`), set
once on this process at the first task that has them: every task with the same ones then
inherits them through ``posix_spawn`` (a vfork), ~0.3-0.5 ms of CPU a task less than a fork of
this Python process. The agent keeps one sandbox per sandbox command *and* rlimits, so a sandbox
only ever serves one set; a task with others retires it (nothing ran) rather than start with
limits that are not its own.
"""

import marshal
import os
import select
import sys

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs every sandbox start ~6 ms
if TYPE_CHECKING:  # annotations naming these are quoted: importing __future__ costs every sandbox start ~0.17 ms
    from typing import Any, Callable, Optional

_signal: "Any" = __import__("_signal")  # the C module: `signal` would import enum (~7 ms per sandbox start)
_socket: "Any" = __import__("_socket")

CONTROL_FD = 0
SIGKILL = 9
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
_DEFAULT_PATH = b"/bin:/usr/bin"  # what execvp searches when PATH is unset
_LIMITS = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_MEMLOCK",
           "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO",
           "RLIMIT_SIGPENDING", "RLIMIT_STACK")


_HELD: dict[str, int] = {}  # kernel files opened once by _read, by path


def _read(path: str) -> bytes:
    """The whole of a /proc file, b"" where it cannot be read. Opened once, then read from offset
    0 each time (``pread``): ``open()`` added five system calls and a file object per file and task.

    The held descriptor reads what a fresh ``open`` would: each file shows this process, or what
    its opener sees (mount table and root, SysV IPC namespace, keys by the opener's credentials),
    and this process never changes its namespaces, root or credentials, nor shares its fs_struct
    with a task. Another file behind the same path needs a mount, which the mount table shows; read
    through its own held descriptor, a mount over its path cannot hide one. A path that cannot be
    opened is tried again next time, as before. Close-on-exec: no task inherits a descriptor."""
    fd = _HELD.get(path)
    if fd is None:
        try:
            fd = _HELD[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return b""
    chunks: list[bytes] = []
    offset = 0
    try:
        while True:  # 4 KiB at a time: a sysctl file costs the kernel a buffer as large as the read asks
            data = os.pread(fd, 4096, offset)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
            offset += len(data)
    except OSError:
        return b""


def _xattrs(path: str) -> list[tuple[str, bytes]]:
    """Extended attributes of ``path`` (not following a link): a task of the sandbox could leave
    data in them for the next one."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
        if not names:  # nearly always: no sort, no generator
            return []
        return sorted([(name, os.getxattr(path, name, follow_symlinks=False)) for name in names])
    except OSError:
        return []


def _dev_tree(top: str = "/dev") -> list[tuple[object, ...]]:
    """Every entry of the sandbox's private /dev with what identifies it and its extended
    attributes (mtimes left out: a file made and removed again leaves nothing behind)."""
    found: list[tuple[object, ...]] = [(top, _xattrs(top))]
    todo = [top]
    lstat, xattrs = os.lstat, _xattrs  # run per entry and task: locals
    while todo:
        path = todo.pop()
        try:
            names = os.listdir(path)
        except OSError:
            continue
        names.sort()
        for name in names:
            full = path + "/" + name
            try:
                st = lstat(full)
            except OSError:
                continue
            mode = st.st_mode
            size = 0 if full == "/dev/shm" or full == "/dev/mqueue" else st.st_size
            found.append((full, mode, st.st_ino, st.st_rdev, st.st_uid, size, xattrs(full)))
            if (mode & 0o170000) == 0o040000:
                todo.append(full)
    return found


def _keys() -> list[tuple[str, ...]]:
    """Keys this user can see (``/proc/keys``): id, type and description, not the usage counts."""
    rows = []
    for line in _read("/proc/keys").decode("latin-1").splitlines():
        words = line.split()
        if len(words) >= 9:
            rows.append((words[0], words[7], " ".join(words[8:])))
    return sorted(rows)


def _sysvipc() -> tuple[bytes, ...]:
    """SysV shared memory, semaphores and message queues of the sandbox's IPC namespace: each
    file whole (its header line is the kernel's, the same every time)."""
    return _read("/proc/sysvipc/shm"), _read("/proc/sysvipc/sem"), _read("/proc/sysvipc/msg")


def _limits() -> object:
    """This process's soft and hard limits. ``/proc/self/limits`` prints every one of them
    (``_LIMITS`` and RLIMIT_LOCKS, RLIMIT_RTTIME), each pair as a number or ``unlimited``; the
    ``resource`` module only where it cannot be read (importing it costs every sandbox start
    ~0.1 ms). A switch from one form to the other is a difference too."""
    text = _read("/proc/self/limits")
    if text:
        return text
    import resource

    return [resource.getrlimit(getattr(resource, name)) for name in _LIMITS if hasattr(resource, name)]


_PROBES: "dict[str, Callable[[], object]]" = {
    "/dev": _dev_tree,
    "mounts": lambda: _read("/proc/self/mountinfo"),
    "sysvipc": _sysvipc,
    "keys": _keys,
    "limits": _limits,
    "nice": lambda: os.getpriority(os.PRIO_PROCESS, 0),
    "affinity": lambda: sorted(os.sched_getaffinity(0)),
    "scheduler": lambda: os.sched_getscheduler(0),
    "oom_score_adj": lambda: _read("/proc/self/oom_score_adj"),
    "coredump_filter": lambda: _read("/proc/self/coredump_filter"),
    "uts": lambda: (os.uname().nodename, _read("/proc/sys/kernel/domainname")),
}


def _state(only: "Optional[tuple[str, ...]]" = None) -> dict[str, object]:
    """What a task could change that a later task would inherit or see, and a fresh sandbox would
    not: the private /dev tmpfs, the mount table, SysV IPC, keys, and pid 1's own attributes that
    another process of the same uid may change (``prlimit``, ``renice``, ``taskset``, /proc files)."""
    return {name: _PROBES[name]() for name in (only or _PROBES)}


def _drift(start: dict[str, object], only: "Optional[tuple[str, ...]]" = None) -> "Optional[str]":
    now = _state(only)
    changed = [name for name in now if start[name] != now[name]]
    return ", ".join(changed) if changed else None


def _prctl() -> "tuple[Callable[..., int], Callable[[], int]]":
    """libc's ``prctl`` and ctypes' saved errno, built from ``_ctypes`` as ``ctypes.CDLL(None,
    use_errno=True).prctl`` builds them (the same in Python 3.9 to 3.13): importing the
    ``ctypes`` package costs every sandbox start ~2 ms more (docs/performance.md). ``ctypes``
    itself where ``_ctypes`` has another shape."""
    try:
        base: Any = __import__("_ctypes")

        class CInt(base._SimpleCData):  # type: ignore[misc]
            _type_ = "i"

        class Function(base.CFuncPtr):  # type: ignore[misc]
            _flags_ = base.FUNCFLAG_CDECL | base.FUNCFLAG_USE_ERRNO
            _restype_ = CInt

        class Libc:
            _handle = base.dlopen(None, base.RTLD_LOCAL)

        return Function(("prctl", Libc())), base.get_errno
    except (AttributeError, TypeError):
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl, ctypes.get_errno


def _nondumpable() -> None:
    """Only a dumpable process can be ptraced or have its /proc files (fds, memory) opened by
    another of the same uid; tasks have no capabilities to override that. The result is read back
    (``PR_GET_DUMPABLE``), so a call that did not take fails closed."""
    prctl, get_errno = _prctl()
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    if prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(0, "prctl(PR_SET_DUMPABLE) did not take")


def _say(ctl: "Any", *words: object) -> None:
    ctl.send(" ".join(str(w) for w in words).encode("ascii", "replace"))


def _which(name: bytes, env: dict[bytes, bytes]) -> bytes:
    """execvp's search, in the task's PATH (not this process's), with execvp's verdict when there
    is nothing to run: EACCES (rc 126) if some candidate was there but not an executable file or
    a directory of PATH could not be searched, else ENOENT (rc 127). A fresh bwrap (execvp) and
    a bare or Landlock task (``subprocess``' own search) report the same."""
    if b"/" in name:
        return name
    denied = False
    for folder in env.get(b"PATH", _DEFAULT_PATH).split(b":"):
        path = (folder or b".") + b"/" + name
        try:
            mode = os.stat(path).st_mode
        except PermissionError:
            denied = True
            continue
        except OSError:
            continue
        if (mode & 0o170000) == 0o100000 and os.access(path, os.X_OK):
            return path
        denied = True
    raise OSError(13, "Permission denied") if denied else OSError(2, "No such file or directory")


def _kill_others() -> None:
    """SIGKILL to every process of the namespace but pid 1 (``kill(-1)`` spares the caller and init)."""
    try:  # noqa: SIM105 - contextlib would cost an import at every sandbox start
        os.kill(-1, SIGKILL)
    except ProcessLookupError:
        pass


def _kill_all() -> None:
    """Kill and reap every process in the namespace but this one; returns when none is left."""
    while True:
        _kill_others()
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _empty(top: str, dev: "Optional[int]" = None) -> None:
    """Remove everything inside ``top`` that lives on ``top``'s own file system (``/dev/shm``,
    ``/dev/mqueue``, a private temp dir). Never crosses into a mount: a workspace bound below the
    private temp dir is the host's, and must come out of this untouched. A directory that holds
    such a mount point stays (it is the same for every task)."""
    names = os.listdir(top)
    if names and dev is None:  # asked only where there is something to remove (nearly never)
        dev = os.lstat(top).st_dev
    for name in names:
        path = top + "/" + name
        st = os.lstat(path)
        if st.st_dev != dev:
            continue
        if (st.st_mode & 0o170000) == 0o040000:
            _empty(path, dev)
            try:  # noqa: SIM105 - contextlib would cost an import at every sandbox start
                os.rmdir(path)
            except OSError:
                pass  # it holds a mount point
        else:
            os.unlink(path)


def _scratch_state(paths: list[bytes]) -> list[tuple[object, ...]]:
    """What a task could leave on a private temp dir itself (its contents are emptied)."""
    found: list[tuple[object, ...]] = []
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            found.append((path,))
            continue
        found.append((path, st.st_mode, st.st_uid, st.st_gid, _xattrs(os.fsdecode(path))))
    return found


def _adoptable(limits: "list[tuple[int, int]]") -> bool:
    """Whether this process can live under ``limits`` itself for good: only file size, processes
    (the count a task is allowed already includes this process), and address space and open files
    with room for its own (256 MiB, 256); never CPU time, which its own work would add up; and none
    above the hard limit it has (it could not take it, and the task's child would fail the same)."""
    import resource

    floors = {resource.RLIMIT_FSIZE: 0, resource.RLIMIT_NPROC: 0, resource.RLIMIT_AS: 1 << 28,
              resource.RLIMIT_NOFILE: 256}
    for res, value in limits:
        if res not in floors or value < floors[res]:
            return False
        hard = resource.getrlimit(res)[1]
        if hard != resource.RLIM_INFINITY and value > hard:
            return False
    return True


def _spawn_limited(path: bytes, argv: list[bytes], env: dict[bytes, bytes], cwd: bytes, out: int, err: int,
                   limits: list[tuple[int, int]], signals: list[int]) -> int:
    """What ``posix_spawn`` does below, plus the task's rlimits (soft and hard, so the task cannot
    raise them): a failure before the exec comes back as its errno over a close-on-exec pipe."""
    import resource

    ready, report = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: only async-safe steps, then exec or _exit
        try:
            os.setsid()
            null = os.open(b"/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            _signal.set_wakeup_fd(-1)
            for number in signals:
                try:  # noqa: SIM105
                    _signal.signal(number, _signal.SIG_DFL)
                except (OSError, ValueError, RuntimeError):
                    pass
            _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
            os.chdir(cwd)
            for res, value in limits:  # CPU: SIGXCPU at soft, SIGKILL one second later (limits.hard)
                resource.setrlimit(res, (value, value + 1 if res == resource.RLIMIT_CPU else value))
            os.execve(path, argv, env)
        except OSError as exc:
            os.write(report, str(exc.errno or 0).encode() + b" " + (exc.strerror or "").encode("ascii", "replace"))
        except BaseException:
            os.write(report, b"0 cannot start the task")
        os._exit(127)
    os.close(report)
    try:
        said = os.read(ready, 4096)
    finally:
        os.close(ready)
    if said:
        os.waitpid(pid, 0)
        errno, _, text = said.decode("ascii", "replace").partition(" ")
        raise OSError(int(errno) if errno.isdigit() else 0, text)
    return pid


class Init:
    def __init__(self, ctl: "Any", wake: int) -> None:
        self.ctl, self.wake = ctl, wake
        self.peeked = bytearray(1)
        self.signals = [s for s in _signal.valid_signals() if s not in (SIGKILL, 19)]
        self.retired: Optional[str] = None
        self.scratch: Optional[list[tuple[object, ...]]] = None  # private temp dirs as first seen
        self.start: dict[str, object] = {}  # the sandbox's state a task may not change (_state)
        self.adopted: Optional[list[tuple[int, int]]] = None  # rlimits set on this process (own_limits)

    def receive(self) -> "tuple[Optional[dict[str, Any]], list[int]]":
        """The next message (None at EOF) and the fds it carries. Its size is asked first
        (``MSG_PEEK | MSG_TRUNC``, Linux 3.4; without ancillary room a peek installs no fd): a 1 MiB
        buffer for each cost an mmap, a mremap and a munmap (~13 µs). At most 1 MiB, as before;
        where the answer is no size (EOF, an older kernel), a 1 MiB buffer."""
        size = self.ctl.recv_into(self.peeked, 1, _socket.MSG_PEEK | _socket.MSG_TRUNC)
        size = size if 1 < size <= 1 << 20 else 1 << 20
        data, ancillary, _flags, _addr = self.ctl.recvmsg(size, 64, _socket.MSG_CMSG_CLOEXEC)
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                whole = len(payload) - len(payload) % 4  # C ints (the `array` module costs ~2.5 ms)
                fds += [int.from_bytes(payload[i:i + 4], sys.byteorder, signed=True) for i in range(0, whole, 4)]
        if not data:
            return None, fds
        message: Any = marshal.loads(data)
        return (message if isinstance(message, dict) else {}), fds

    def own_limits(self, limits: "list[tuple[int, int]]") -> "Optional[list[tuple[int, int]]]":
        """The rlimits the task's own child must still set ([]: it inherits them all from this
        process), or None when it would inherit others. At the first task with limits this
        process can live under, it takes them for good (soft and hard): later tasks inherit them."""
        if self.adopted is None and limits and _adoptable(limits):
            import resource

            for res, value in limits:
                resource.setrlimit(res, (value, value))
            self.adopted = limits
            self.start["limits"] = _limits()  # what a task may not change from now on
        inherited = self.adopted or []
        if limits == inherited:
            return []
        return None if inherited else limits

    def spawn(self, task: "dict[str, Any]", out: int, err: int, limits: "list[tuple[int, int]]") -> int:
        argv: list[bytes] = task["argv"]
        env: dict[bytes, bytes] = task["env"]
        path = _which(argv[0], env)
        if limits:  # posix_spawn cannot set them: fork, set them in the child, exec
            return _spawn_limited(path, argv, env, task["cwd"], out, err, limits, self.signals)
        os.chdir(task["cwd"])
        try:
            return os.posix_spawn(
                path, argv, env,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, b"/dev/null", os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)],
                setsid=True, setsigmask=(), setsigdef=self.signals,
            )
        finally:
            os.chdir("/")

    def wait(self, pid: int) -> int:
        """The task's wait status; a ``kill`` from the agent kills every process of the task now."""
        status: Optional[int] = None
        while status is None:
            ready, _, _ = select.select([CONTROL_FD, self.wake], [], [])
            if self.wake in ready:
                os.read(self.wake, 4096)
            if CONTROL_FD in ready:
                message, fds = self.receive()
                for fd in fds:
                    os.close(fd)
                if message is None:  # the agent is gone: take everything down with this sandbox
                    _kill_all()
                    raise SystemExit(0)
                if message.get("op") == "kill":
                    _kill_others()
            while True:  # reap the task and any orphan that already ended
                try:
                    done, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if done == 0:
                    break
                if done == pid:
                    status = st
        return status

    def serve(self) -> int:
        start = self.start = _state()
        _say(self.ctl, "ready")
        while True:
            task, fds = self.receive()
            if task is None:
                return 0
            if task.get("op") != "run" or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                continue
            why = self.retired or _drift(start, ("mounts",))
            limits = self.own_limits(sorted((int(r), int(v)) for r, v in task.get("rlimits") or ()))
            if why is not None or limits is None:
                for fd in fds:
                    os.close(fd)
                _say(self.ctl, "retired", *(("changed since the sandbox started:", why) if why is not None
                                            else ("its tasks inherit other limits",)))
                return 0
            try:
                pid = self.spawn(task, fds[0], fds[1], limits)
            except OSError as exc:
                _say(self.ctl, "error", exc.errno or 0, exc.strerror or exc)
                continue
            finally:
                for fd in fds:
                    os.close(fd)
            _say(self.ctl, "started", pid)
            status = self.wait(pid)
            _kill_all()
            _say(self.ctl, "exit", os.waitstatus_to_exitcode(status))
            # Off the task's critical path (the agent is already sending its result): clean up,
            # and find anything of this task that would outlive it. Only the mount table can
            # change from outside the sandbox, so only it is checked again right before a spawn.
            scratch = [p for p in task.get("scratch", []) if isinstance(p, bytes)]
            for top in (os.fsdecode(p) for p in scratch):
                try:
                    _empty(top)
                except OSError as exc:  # then the state differs and the check below retires the sandbox
                    self.retired = f"cannot empty {top}: {exc}"
            if self.scratch is None:
                self.scratch = _scratch_state(scratch)
            elif _scratch_state(scratch) != self.scratch:
                self.retired = "a private temp dir's mode, owner or attributes"
            self.retired = self.retired or _drift(start)


def main() -> int:
    ctl = _socket.socket(fileno=CONTROL_FD)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    for number in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGUSR1, _signal.SIGUSR2):
        _signal.signal(number, _signal.SIG_DFL)  # pid 1: a default action is never delivered from inside
    _signal.signal(_signal.SIGCHLD, lambda _n, _f: None)  # only to wake select() when a child ends
    _signal.set_wakeup_fd(wake_w)
    try:
        _nondumpable()
    except (OSError, ImportError, AttributeError) as exc:
        _say(ctl, "error", 0, f"cannot make the sandbox's init non-dumpable: {exc}")
        return 1
    if os.getpid() != 1:
        _say(ctl, "error", 0, "not pid 1 of its pid namespace (bwrap without --as-pid-1?)")
        return 1
    return Init(ctl, wake_r).serve()


if __name__ == "__main__":
    raise SystemExit(main())
