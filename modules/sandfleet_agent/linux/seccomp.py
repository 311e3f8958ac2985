"""The seccomp filter every sandboxed task runs under, on both Linux backends.

Namespaces (bwrap) and Landlock decide what a task may *see*; this filter takes away kernel
entry points that no task needs and that an attacker uses to get out or to reach what the
others do not cover. One program, built here from a table, with a socket policy per network mode:

Refused everywhere (``EPERM`` unless said otherwise), and why:

* keyrings: ``keyctl``, ``add_key``, ``request_key``. Keyrings are not namespaced; a task could
  read the keys of the user's session or plant keys that outlive the run.
* new namespaces: ``unshare``, ``setns``, ``clone`` with any ``CLONE_NEW*`` flag; ``clone3``
  answers ``ENOSYS`` (its flags sit in memory a filter cannot read; libc then falls back to
  ``clone``, which is checked). A user namespace hands a task every capability inside it:
  the largest kernel attack surface an unprivileged process can reach.
* mounts: ``mount``, ``umount2``, ``pivot_root`` and the new mount API (``open_tree``,
  ``move_mount``, ``fsopen``, ``fsconfig``, ``fsmount``, ``fspick``, ``mount_setattr``,
  ``open_tree_attr``): the sandbox's view of the filesystem is final.
* kernel attack surface with no use in a build or test: ``bpf``, ``perf_event_open``,
  ``userfaultfd``, ``io_uring_*`` (io_uring also opens sockets without ``socket()``),
  ``open_by_handle_at`` (opens files by handle, around every path check), ``lookup_dcookie``.
* host administration (capability-gated, listed so a capability that slipped through still
  cannot use them): ``kexec_*``, module loading, ``reboot``, ``swapon/off``, ``acct``,
  ``quotactl*``, ``iopl``, ``ioperm``, ``sethostname``, ``setdomainname``, ``settimeofday``,
  ``clock_settime``, ``clock_adjtime``, ``vhangup``, ``nfsservctl``, ``uselib``.
* ``mknod``/``mknodat`` of a character or block device (a block device is the raw disk;
  FIFOs and plain files stay allowed).
* set-user-ID and set-group-ID bits: ``chmod``, ``fchmod``, ``fchmodat``, ``fchmodat2`` with
  ``S_ISUID``/``S_ISGID`` in the mode, and ``open``/``openat``/``creat`` creating a file with
  them: files outlive the task, and a set-ID file in a workspace would give whoever runs it
  later the task's user (root, for an agent run as root). ``openat2`` answers ``ENOSYS`` (its
  mode is in memory; libc does not call it on its own).
* ``ptrace`` attach (``PTRACE_ATTACH``, ``PTRACE_SEIZE``); ``PTRACE_TRACEME`` (how gdb and strace
  start a program) stays allowed.
* acting on another process by pid: ``prlimit64``, ``sched_setaffinity``, ``sched_setscheduler``,
  ``sched_setparam``, ``sched_setattr``, ``migrate_pages``, ``move_pages`` only on the caller
  (pid 0), ``setpriority`` and ``ioprio_set`` only on the caller or its process group. Landlock
  gives no pid namespace, so without this a task could ``renice``, pin or starve host
  processes of its user; the persistent bwrap sandbox's init is protected the same way.

Sockets, by the task's network (:data:`SOCKET_MODES`):

* ``all`` (network ``full``): every family.
* ``inet`` (bwrap, network ``none`` or managed): ``AF_INET`` and ``AF_INET6`` only; they reach
  nothing but the sandbox's own network namespace (its loopback, and the proxy's listener for a
  managed network). ``AF_UNIX`` is refused because a *pathname* UNIX socket is a file, not part
  of any network namespace: a read-only view of the host still lets ``connect()`` reach the
  operator's ssh-agent, docker.sock or D-Bus, and no mount or Landlock right (below ABI 9)
  stops that. ``AF_NETLINK``, ``AF_PACKET``, ``AF_VSOCK`` (not isolated by network namespaces)
  and the rest are refused as well.
* ``none`` (Landlock, network ``none``): no ``socket()`` at all; Landlock has no network
  namespace, so even UDP would leave the host.

In both restricted modes ``socketpair(AF_UNIX, SOCK_STREAM | SOCK_SEQPACKET)`` stays allowed
(asyncio, multiprocessing pipes): such a pair is connected from birth and can never be pointed
at a path. ``SOCK_DGRAM`` pairs are refused, since a datagram socket can be re-connected or
``sendto`` a path (``/dev/log``). The price: a task under a restricted network cannot start its
own UNIX-socket server, even inside its workspace (the result's warnings and the README say so).

A syscall from another ABI than the filter's (i386 on x86_64) kills the process; x32 system
calls are refused, so no second syscall table sidesteps a rule.

Standard library only. :func:`program` gives the raw ``struct sock_filter`` array (what bwrap's
``--seccomp FD`` reads); :class:`Installer` applies it to the calling process (Landlock's
preexec and ``landlock_exec``), after ``no_new_privs``.
"""

from __future__ import annotations

import errno
import functools
import os
import struct
from dataclasses import dataclass
from typing import Any, Optional

SOCKET_MODES = ("all", "inet", "none")

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_KILL_PROCESS = 0x80000000
EPERM = RET_ERRNO | errno.EPERM
ENOSYS = RET_ERRNO | errno.ENOSYS
X32_SYSCALL_BIT = 0x40000000

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
SOCK_STREAM, SOCK_SEQPACKET = 1, 5
SOCK_TYPE_MASK = 0xF  # the type without SOCK_NONBLOCK / SOCK_CLOEXEC
CLONE_NEW = 0x7E020080  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
S_IFMT, S_IFCHR, S_IFBLK = 0o170000, 0o020000, 0o060000
SET_ID_BITS = 0o6000
O_CREATES = 0o100 | 0o20000000  # O_CREAT | __O_TMPFILE (same on x86_64 and aarch64)
PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
PRIO_PROCESS, PRIO_PGRP = 0, 1
IOPRIO_WHO_PROCESS, IOPRIO_WHO_PGRP = 1, 2

_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

# Syscall numbers: (x86_64, aarch64); None where the architecture lacks the call.
_NR: dict[str, tuple[Optional[int], Optional[int]]] = {
    "socket": (41, 198), "socketpair": (53, 199), "clone": (56, 220), "clone3": (435, 435),
    "unshare": (272, 97), "setns": (308, 268),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "open_tree": (428, 428),
    "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432),
    "fspick": (433, 433), "mount_setattr": (442, 442), "open_tree_attr": (467, 467),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "open_by_handle_at": (304, 265), "lookup_dcookie": (212, 18),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "init_module": (175, 105),
    "finit_module": (313, 273), "delete_module": (176, 106), "reboot": (169, 142),
    "swapon": (167, 224), "swapoff": (168, 225), "acct": (163, 89), "quotactl": (179, 60),
    "quotactl_fd": (443, 443), "iopl": (172, None), "ioperm": (173, None),
    "sethostname": (170, 161), "setdomainname": (171, 162), "settimeofday": (164, 170),
    "clock_settime": (227, 112), "clock_adjtime": (305, 266), "vhangup": (153, 58),
    "nfsservctl": (180, 42), "uselib": (134, None),
    "mknod": (133, None), "mknodat": (259, 33),
    "chmod": (90, None), "fchmod": (91, 52), "fchmodat": (268, 53), "fchmodat2": (452, 452),
    "open": (2, None), "openat": (257, 56), "creat": (85, None), "openat2": (437, 437),
    "ptrace": (101, 117),
    "prlimit64": (302, 261), "sched_setaffinity": (203, 122), "sched_setscheduler": (144, 119),
    "sched_setparam": (142, 118), "sched_setattr": (314, 274), "migrate_pages": (256, 238),
    "move_pages": (279, 239), "setpriority": (141, 140), "ioprio_set": (251, 30),
}

_REFUSED = (
    "keyctl", "add_key", "request_key", "unshare", "setns",
    "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "open_tree_attr", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "open_by_handle_at", "lookup_dcookie",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "acct", "quotactl", "quotactl_fd", "iopl", "ioperm", "sethostname", "setdomainname",
    "settimeofday", "clock_settime", "clock_adjtime", "vhangup", "nfsservctl", "uselib",
)
_NOT_IMPLEMENTED = ("clone3", "openat2")  # arguments in memory: ENOSYS makes libc use the checked call
_SELF_ONLY_PID = ("prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
                  "migrate_pages", "move_pages")


@dataclass(frozen=True)
class Cond:
    """``(arg & mask) == value``, or with ``value=None``: ``arg & mask`` has any bit set.
    Only the low 32 bits of an argument are read: every argument checked here is an int, a
    mode or flags whose meaningful bits all live there (the kernel truncates the rest)."""

    arg: int
    mask: int = 0xFFFFFFFF
    value: Optional[int] = None


@dataclass(frozen=True)
class Case:
    """When every condition holds, the syscall gets ``action``; cases are tried in order and a
    syscall matching none is allowed."""

    conds: tuple[Cond, ...]
    action: int


def _eq(arg: int, value: int, mask: int = 0xFFFFFFFF) -> Cond:
    return Cond(arg, mask, value)


def _rules(sockets: str) -> dict[str, tuple[Case, ...]]:
    """The filter as a table: syscall name -> its cases (an empty condition list always matches)."""
    if sockets not in SOCKET_MODES:
        raise ValueError(f"unknown socket mode {sockets!r} (known: {', '.join(SOCKET_MODES)})")
    deny = (Case((), EPERM),)
    rules: dict[str, tuple[Case, ...]] = {name: deny for name in _REFUSED}
    rules.update({name: (Case((), ENOSYS),) for name in _NOT_IMPLEMENTED})
    rules["clone"] = (Case((Cond(0, CLONE_NEW),), EPERM),)
    rules["mknod"] = (Case((_eq(1, S_IFCHR, S_IFMT),), EPERM), Case((_eq(1, S_IFBLK, S_IFMT),), EPERM))
    rules["mknodat"] = (Case((_eq(2, S_IFCHR, S_IFMT),), EPERM), Case((_eq(2, S_IFBLK, S_IFMT),), EPERM))
    for name, mode_arg in (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2), ("creat", 1)):
        rules[name] = (Case((Cond(mode_arg, SET_ID_BITS),), EPERM),)
    rules["open"] = (Case((Cond(1, O_CREATES), Cond(2, SET_ID_BITS)), EPERM),)
    rules["openat"] = (Case((Cond(2, O_CREATES), Cond(3, SET_ID_BITS)), EPERM),)
    rules["ptrace"] = (Case((_eq(0, PTRACE_ATTACH),), EPERM), Case((_eq(0, PTRACE_SEIZE),), EPERM))
    for name in _SELF_ONLY_PID:
        rules[name] = (Case((_eq(0, 0),), RET_ALLOW), Case((), EPERM))
    rules["setpriority"] = (Case((_eq(0, PRIO_PROCESS), _eq(1, 0)), RET_ALLOW),
                            Case((_eq(0, PRIO_PGRP), _eq(1, 0)), RET_ALLOW), Case((), EPERM))
    rules["ioprio_set"] = (Case((_eq(0, IOPRIO_WHO_PROCESS), _eq(1, 0)), RET_ALLOW),
                           Case((_eq(0, IOPRIO_WHO_PGRP), _eq(1, 0)), RET_ALLOW), Case((), EPERM))
    if sockets != "all":
        families = (AF_INET, AF_INET6) if sockets == "inet" else ()
        rules["socket"] = (*(Case((_eq(0, f),), RET_ALLOW) for f in families), Case((), EPERM))
        rules["socketpair"] = (Case((_eq(0, AF_UNIX), _eq(1, SOCK_STREAM, SOCK_TYPE_MASK)), RET_ALLOW),
                               Case((_eq(0, AF_UNIX), _eq(1, SOCK_SEQPACKET, SOCK_TYPE_MASK)), RET_ALLOW),
                               Case((), EPERM))
    return rules


# -- classic BPF ----------------------------------------------------------------------------------

_LD_W_ABS, _ALU_AND_K, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x54, 0x15, 0x35, 0x45, 0x06
_OFF_NR, _OFF_ARCH = 0, 4
Insn = tuple[int, int, int, int]


def _arg_offset(arg: int) -> int:
    return 16 + 8 * arg  # low 32 bits of args[arg] (little-endian: x86_64 and aarch64)


def _case(case: Case) -> list[Insn]:
    """A case: its checks, each jumping past the case's ``ret`` when it fails, then the ``ret``."""
    checks: list[list[Insn]] = []
    for cond in case.conds:
        load = [(_LD_W_ABS, 0, 0, _arg_offset(cond.arg))]
        if cond.value is None:
            checks.append([*load, (_JSET_K, 0, 0, cond.mask)])
        elif cond.mask != 0xFFFFFFFF:
            checks.append([*load, (_ALU_AND_K, 0, 0, cond.mask), (_JEQ_K, 0, 0, cond.value)])
        else:
            checks.append([*load, (_JEQ_K, 0, 0, cond.value)])
    body: list[Insn] = []
    remaining = sum(len(c) for c in checks) + 1  # instructions from a check's start to past the ret
    for check in checks:
        *head, (code, _jt, _jf, k) = check
        remaining -= len(check)
        body += [*head, (code, 0, remaining, k)]  # false: skip the later checks and the ret
    return [*body, (_RET_K, 0, 0, case.action)]


def _program(machine: str, sockets: str) -> list[Insn]:
    index = 0 if machine == "x86_64" else 1
    insns: list[Insn] = [(_LD_W_ABS, 0, 0, _OFF_ARCH), (_JEQ_K, 1, 0, _ARCH[machine]),
                         (_RET_K, 0, 0, RET_KILL_PROCESS), (_LD_W_ABS, 0, 0, _OFF_NR)]
    if machine == "x86_64":
        insns += [(_JGE_K, 0, 1, X32_SYSCALL_BIT), (_RET_K, 0, 0, EPERM)]
    for name, cases in sorted(_rules(sockets).items()):
        nr = _NR[name][index]
        if nr is None:
            continue
        body = [insn for case in cases for insn in _case(case)] + [(_RET_K, 0, 0, RET_ALLOW)]
        if len(body) > 255:
            raise AssertionError(f"seccomp rule for {name} is too long for a BPF jump")
        # Every body ends in a ret, so the accumulator (overwritten by argument loads) is only
        # ever compared with the next syscall number on the path that skipped the body.
        insns += [(_JEQ_K, 0, len(body), nr), *body]
    return [*insns, (_RET_K, 0, 0, RET_ALLOW)]


def machine_name(machine: Optional[str] = None) -> Optional[str]:
    """This filter's name for ``machine`` (default: this host's), None when unsupported."""
    return _MACHINES.get((machine or os.uname().machine).lower())


def supported(machine: Optional[str] = None) -> bool:
    return machine_name(machine) is not None


def program(sockets: str, machine: Optional[str] = None) -> bytes:
    """The filter as raw ``struct sock_filter`` entries, the form bwrap's ``--seccomp`` reads."""
    name = machine_name(machine)
    if name is None:
        raise ValueError(f"no seccomp filter for {machine or os.uname().machine} (sandfleet has x86_64 and aarch64)")
    return _packed(name, sockets)


@functools.cache
def _packed(machine: str, sockets: str) -> bytes:
    return b"".join(struct.pack("<HBBI", *insn) for insn in _program(machine, sockets))


def describe(sockets: str) -> str:
    """The filter in words, for a dry-run: what is refused and which sockets are left."""
    left = {"all": "every socket family", "inet": "AF_INET and AF_INET6 sockets only",
            "none": "no socket() at all"}[sockets]
    extra = "" if sockets == "all" else "; socketpair(AF_UNIX, STREAM|SEQPACKET) only"
    return (f"seccomp filter (sockets: {sockets}): {left}{extra}; refused: {', '.join(_REFUSED)}; "
            "ENOSYS: clone3, openat2; clone with CLONE_NEW*; mknod of devices; set-ID mode bits; "
            "ptrace attach/seize; pid-targeting scheduling and limit calls on other processes\n")


class Installer:
    """A filter made ready in the parent, so the child (between fork and exec) only calls prctl.
    Keep it alive until the child has exec'd."""

    def __init__(self, sockets: str, machine: Optional[str] = None) -> None:
        import ctypes  # here: the agent imports this module for bwrap too, which never needs ctypes

        data = program(sockets, machine)
        count = len(data) // 8
        self._buffer = ctypes.create_string_buffer(data, len(data))
        self._prog = struct.pack("HxxxxxxQ", count, ctypes.addressof(self._buffer))  # struct sock_fprog
        self._fprog = ctypes.create_string_buffer(self._prog, len(self._prog))
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl: Any = libc.prctl
        self._prctl.restype = ctypes.c_int
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]

        self._address = ctypes.addressof(self._fprog)
        self._get_errno = ctypes.get_errno

    def install(self) -> None:
        """Apply to the calling process (``no_new_privs`` must be set). Child-side only."""
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._address, 0, 0) != 0:
            err = self._get_errno()
            raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")
