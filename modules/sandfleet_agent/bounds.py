"""Bounds: a task's limits made real on this host, by a cgroup per task or by rlimits.

What a limit is, its parsing and merging travel in :mod:`sandfleet_agent.portable.limits`;
this module is the host's half. The mechanism is chosen per host and reported like a backend
(``HostFacts.limits``):

* ``cgroup1``/``cgroup2``: a cgroup per task (memory and pids), below the agent's own, which the
  agent enters just for the moment it starts the task, so everything the task forks is inside;
  emptied and removed when the task ends; a kill by a limit is read from the cgroup's counters
  (``oom_kill``, ``pids.events``) and said (``killed: memory limit 512 MiB reached``). v1 needs
  root; v2 needs a delegated cgroup with both controllers.
* ``rlimit`` elsewhere: ``RLIMIT_AS`` for memory (address space, not resident memory: said in the
  result's warnings) and ``RLIMIT_NPROC`` for processes (it counts all of the user's processes:
  set to what the user has now plus the limit).
* CPU seconds, file size and open files are always rlimits, set in the child before the command.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Optional

from sandfleet_agent.portable.limits import TaskLimits, shown

_CGROUP_ROOT = "/sys/fs/cgroup"


def mem_total() -> int:
    """The host's memory in bytes (0 when unknown): half of it is the built-in memory limit."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0



def probe() -> tuple[str, str]:
    """The mechanism this host gives memory and process limits, and why not a better one."""
    if os.geteuid() == 0 and all(os.access(f"{_CGROUP_ROOT}/{c}/cgroup.procs", os.W_OK) for c in ("memory", "pids")):
        return "cgroup1", ""
    own = _own_cgroup2()
    if own is not None:
        return "cgroup2", ""
    return "rlimit", ("no cgroup can be created here (cgroup v1 needs root; v2 needs a delegated cgroup with the "
                      "memory and pids controllers): memory is bounded by address space (RLIMIT_AS) and processes by "
                      "the user's process count (RLIMIT_NPROC)")


def _own_cgroup2() -> Optional[str]:
    """Our cgroup v2 directory when we may create children in it with memory and pids."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            line = next((ln for ln in fh if ln.startswith("0::")), None)
    except OSError:
        return None
    if line is None:
        return None
    base = _CGROUP_ROOT if os.path.exists(f"{_CGROUP_ROOT}/cgroup.controllers") else f"{_CGROUP_ROOT}/unified"
    path = base + line[3:].strip().rstrip("/")
    try:
        with open(f"{path}/cgroup.subtree_control", encoding="ascii") as fh:
            enabled = fh.read().split()
    except OSError:
        return None
    if "memory" in enabled and "pids" in enabled and os.access(path, os.W_OK):
        return path
    return None


@dataclass
class Outcome:
    """What the limits did to a task: the limit that stopped it (or None)."""

    hit: Optional[str] = None
    message: Optional[str] = None


class TaskCgroup:
    """A cgroup (v1: one per controller) for one task: made, entered around the spawn, emptied and
    removed after, and asked whether a limit stopped the task."""

    def __init__(self, mechanism: str, name: str, limits: TaskLimits) -> None:
        self.mechanism, self.limits = mechanism, limits
        if mechanism == "cgroup1":
            # Below the agent's own cgroups: whatever bounds the agent (a container, a slice) bounds its tasks too.
            self.home = {c: _v1_path(c) for c in ("memory", "pids")}
            self.dirs = {c: f"{home}/sandfleet-{name}" for c, home in self.home.items()}
        else:
            own = _own_cgroup2()
            if own is None:
                raise OSError("no delegated cgroup v2 to create a task cgroup in")
            self.dirs = {"unified": f"{own}/sandfleet-{name}"}
            self.home = {"unified": own}
        for path in self.dirs.values():
            os.makedirs(path, exist_ok=True)
        self._write_limits()

    def _write_limits(self, extra_pids: int = 0) -> None:
        mem, pids = self.limits.memory, self.limits.pids
        pids_max = pids + extra_pids if pids is not None else "max"
        if self.mechanism == "cgroup1":
            # memory+swap may never be below memory: raise it first, lower it after (absent without swap accounting)
            memory = mem if mem is not None else -1
            with contextlib.suppress(OSError):
                _write(f"{self.dirs['memory']}/memory.memsw.limit_in_bytes", -1)
            _write(f"{self.dirs['memory']}/memory.limit_in_bytes", memory)
            with contextlib.suppress(OSError):
                _write(f"{self.dirs['memory']}/memory.memsw.limit_in_bytes", memory)
            _write(f"{self.dirs['pids']}/pids.max", pids_max)
        else:
            _write(f"{self.dirs['unified']}/memory.max", mem if mem is not None else "max")
            with contextlib.suppress(OSError):
                _write(f"{self.dirs['unified']}/memory.swap.max", 0 if mem is not None else "max")
            _write(f"{self.dirs['unified']}/pids.max", pids_max)

    def retarget(self, limits: TaskLimits) -> tuple[int, int]:
        """Give the processes already inside (a persistent sandbox's bwrap and init) the next task's
        limits, on top of what they hold; returns the counters to pass to :meth:`outcome` after.
        ``OSError`` when the kernel refuses (memory already above the new limit)."""
        self.limits = limits
        self._write_limits(extra_pids=len(self.pids()))
        return self._counters()

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This process inside the task's cgroup(s) while the task is started: what it forks is
        born there. Only this thread forks tasks; the agent's other threads never allocate much."""
        pid = str(os.getpid())
        for path in self.dirs.values():
            _write(f"{path}/cgroup.procs", pid)
        try:
            yield None
        finally:
            for key in self.dirs:
                _write(f"{self.home[key]}/cgroup.procs", pid)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.dirs.values():
            with contextlib.suppress(OSError, ValueError), open(f"{path}/cgroup.procs", encoding="ascii") as fh:
                found.update(int(p) for p in fh.read().split())
        return found

    def kill_all(self) -> None:
        """Every process of the task, however it hid (setsid, double fork): killed and gone."""
        if self.mechanism == "cgroup2":
            with contextlib.suppress(OSError):
                _write(f"{self.dirs['unified']}/cgroup.kill", 1)
        deadline = time.monotonic() + 5
        for pause in _pauses():
            left = self.pids() - {os.getpid()}
            if not left or time.monotonic() > deadline:
                return
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(pause)

    def outcome(self, before: tuple[int, int] = (0, 0)) -> Outcome:
        """Which limit stopped the task, read from the cgroup's own counters (``before``: their
        values when the task started, for a cgroup that outlives its tasks)."""
        ooms, forks = self._counters()
        if self.limits.memory is not None and ooms > before[0]:
            return Outcome("memory", f"killed: memory limit {shown('memory', self.limits.memory)} reached")
        if self.limits.pids is not None and forks > before[1]:
            return Outcome("pids", f"pids limit {self.limits.pids} reached (a fork failed)")
        return Outcome()

    def _counters(self) -> tuple[int, int]:
        """(OOM kills, refused forks) so far."""
        if self.mechanism == "cgroup1":
            memory = _read(f"{self.dirs['memory']}/memory.oom_control")
            if "oom_kill " not in memory:  # older kernels: how often a charge failed
                memory = "oom_kill " + (_read(f"{self.dirs['memory']}/memory.failcnt").strip() or "0")
            pids = _read(f"{self.dirs['pids']}/pids.events")
        else:
            memory = _read(f"{self.dirs['unified']}/memory.events")
            pids = _read(f"{self.dirs['unified']}/pids.events")
        ooms, forks = re.search(r"oom_kill (\d+)", memory), re.search(r"max (\d+)", pids)
        return (int(ooms.group(1)) if ooms else 0, int(forks.group(1)) if forks else 0)

    def remove(self) -> None:
        self.kill_all()
        for path in self.dirs.values():
            for pause, _ in zip(_pauses(), range(60)):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still busy for a moment after the last process died
                    time.sleep(pause)


def _pauses() -> Iterator[float]:
    """Waits between looks at a cgroup emptying: short first (a sandbox's last process is usually
    gone within a millisecond, and every fresh bwrap task waits for it), then every 5 ms."""
    pause = 0.0002
    while True:
        yield pause
        pause = min(pause * 2, 0.005)


@functools.cache
def _v1_path(controller: str) -> str:
    """This process's own cgroup in a v1 hierarchy (where the agent goes back after a spawn).
    Read once: the agent only ever leaves it for the instant it starts a task."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            for line in fh:
                _, names, path = line.rstrip("\n").split(":", 2)
                if controller in names.split(","):
                    return f"{_CGROUP_ROOT}/{controller}{path.rstrip('/')}"
    except (OSError, ValueError):
        pass
    return f"{_CGROUP_ROOT}/{controller}"


def _write(path: str, value: object) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(str(value))


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read()
    except OSError:
        return ""


def user_processes() -> int:
    """Processes of this real uid now (RLIMIT_NPROC counts them all). Run before every task that
    has the limit outside a sandbox of its own: each entry is looked up from an open /proc, with
    no context manager per entry (~25% less CPU, ~0.05 ms a task at 190 processes)."""
    uid, count, stat = os.getuid(), 0, os.stat
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for entry in os.listdir(proc):
            if entry.isdigit():
                try:
                    if stat(entry, dir_fd=proc).st_uid == uid:
                        count += 1
                except OSError:  # it ended meanwhile
                    pass
    finally:
        os.close(proc)
    return count


def nproc_counted_per_userns(release: Optional[str] = None) -> bool:
    """Whether this kernel counts ``RLIMIT_NPROC`` per user namespace (ucounts, Linux 5.14)."""
    parts = (release or os.uname().release).split(".")
    try:
        version = int(parts[0]), int("".join(c for c in parts[1][:3] if c.isdigit()) or "0")
    except (IndexError, ValueError):
        return False
    return version >= (5, 14)


def rlimits(limits: TaskLimits, mechanism: str, alone_in_userns: bool = False) -> list[tuple[int, int]]:
    """The (resource, value) pairs the child sets before exec: always CPU, file size and open
    files; memory and processes too where no cgroup holds them.

    ``RLIMIT_NPROC`` is checked against the processes of the task's uid *in the task's user
    namespace* (Linux 5.14+ counts them per namespace, then each parent namespace against the
    limit its creator had). A task started directly is in the agent's namespace, with every
    process of the user, so it gets those plus ``pids``. ``alone_in_userns``: the task starts in
    a persistent sandbox's own user namespace, where only its pid 1 lives between tasks (it kills
    every leftover), and which was made without this limit; there it is ``pids`` plus that one.
    (Counting the user's processes there too would let a task make them all again, and scanning
    /proc costs ~1 ms a task.) Older kernels count every process of the user in one place."""
    import resource

    out: list[tuple[int, int]] = []
    if limits.cpu_seconds is not None:  # soft: SIGXCPU, which says why; the hard limit's SIGKILL would not
        out.append((resource.RLIMIT_CPU, limits.cpu_seconds))
    if limits.file_size is not None:
        out.append((resource.RLIMIT_FSIZE, limits.file_size))
    if limits.open_files is not None:
        out.append((resource.RLIMIT_NOFILE, limits.open_files))
    if mechanism == "rlimit":
        if limits.memory is not None:
            out.append((resource.RLIMIT_AS, limits.memory))
        if limits.pids is not None and os.getuid() != 0:  # root is not counted by RLIMIT_NPROC
            alone = alone_in_userns and nproc_counted_per_userns()
            out.append((resource.RLIMIT_NPROC, (1 if alone else user_processes()) + limits.pids))
    return out


def hard(resource_id: int, soft: int) -> int:
    """The hard limit for a soft one: the same, except CPU time, where the kernel kills with an
    anonymous SIGKILL at the hard limit but first sends SIGXCPU at the soft one (one second more)."""
    import resource

    return soft + 1 if resource_id == resource.RLIMIT_CPU else soft


def preexec(pairs: list[tuple[int, int]], then: Optional[Callable[[], None]] = None) -> Callable[[], None]:
    """A child-side hook: set each rlimit (soft and hard), then run ``then`` (Landlock's)."""
    import resource

    setrlimit = resource.setrlimit

    def apply() -> None:
        for res, value in pairs:
            setrlimit(res, (value, hard(res, value)))
        if then is not None:
            then()
    return apply


def rlimit_outcome(limits: TaskLimits, rc: Optional[int]) -> Outcome:
    """Which rlimit stopped the task, from how it ended."""
    signum = -rc if rc is not None and rc < 0 else rc - 128 if rc is not None and rc > 128 else None
    if signum == signal.SIGXCPU and limits.cpu_seconds is not None:
        return Outcome("cpu_seconds", f"killed: cpu_seconds limit {limits.cpu_seconds} s reached")
    if signum == signal.SIGXFSZ and limits.file_size is not None:
        return Outcome("file_size", f"killed: file_size limit {shown('file_size', limits.file_size)} reached")
    return Outcome()


#: Said with every task whose memory is bounded by address space, not resident memory.
AS_NOTE = ("limits: memory is bounded by address space (RLIMIT_AS) on this host, not by resident memory: "
           "programs that reserve much more than they use (JVMs, Go, ASan) may fail earlier")


class Bounds:
    """One task's limits made real for one start: a cgroup where the host has one for memory and
    processes, rlimits for the rest (and for memory and processes where there is no cgroup)."""

    _count = 0

    def __init__(self, limits: TaskLimits, mechanism: str) -> None:
        self.limits, self.mechanism = limits, mechanism
        self.cgroup: Optional[TaskCgroup] = None
        self.warnings: list[str] = []
        if mechanism.startswith("cgroup") and (limits.memory is not None or limits.pids is not None):
            Bounds._count += 1
            try:
                self.cgroup = TaskCgroup(mechanism, f"{os.getpid()}-{Bounds._count}", limits)
            except OSError as exc:  # fall back rather than run unbounded
                self.mechanism = "rlimit"
                self.warnings.append(f"limits: no task cgroup ({exc}); memory and processes bounded by rlimits")
        self.pairs = rlimits(limits, self.mechanism) if os.name == "posix" else []
        if self.mechanism == "rlimit" and limits.memory is not None:
            self.warnings.append(AS_NOTE)

    def preexec(self, then: Optional[Callable[[], None]]) -> Optional[Callable[[], None]]:
        return preexec(self.pairs, then) if self.pairs else then

    def starting(self) -> contextlib.AbstractContextManager[object]:
        return self.cgroup.entered() if self.cgroup is not None else contextlib.nullcontext()

    def finish(self, rc: Optional[int]) -> Outcome:
        """Which limit stopped the task; the cgroup is emptied and removed."""
        if self.cgroup is None:
            return rlimit_outcome(self.limits, rc)
        try:
            found = self.cgroup.outcome()
            return found if found.hit else rlimit_outcome(self.limits, rc)
        finally:
            self.cgroup.remove()
