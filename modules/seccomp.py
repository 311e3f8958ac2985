"""A seccomp filter that leaves a process only UNIX-domain sockets.

Landlock filters TCP by port but has no say over UDP, raw, netlink or other socket families,
so "network none" under Landlock alone would still let DNS and other UDP out. This filter closes
that: ``socket()`` succeeds only for ``AF_UNIX`` (EPERM otherwise), ``io_uring_setup`` fails
(io_uring can open sockets without calling ``socket()``), and x32/compat system calls on x86_64
fail so the check cannot be sidestepped through another syscall table. Like Landlock it needs
``no_new_privs``, which :func:`.landlock.restrict_current` sets first.

The program is built in the parent (:func:`prepare_socket_filter`); the child only calls
``prctl`` with it, so it is safe in ``subprocess.Popen(preexec_fn=...)``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from typing import Any, Optional

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_KILL_PROCESS = 0x80000000
AF_UNIX = 1
X32_SYSCALL_BIT = 0x40000000

# (audit arch, socket, io_uring_setup) per machine
_ARCHES = {
    "x86_64": (0xC000003E, 41, 425),
    "aarch64": (0xC00000B7, 198, 425),
}

_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def supported() -> bool:
    return platform.machine() in _ARCHES


def _program(machine: str) -> list[tuple[int, int, int, int]]:
    arch, nr_socket, nr_io_uring = _ARCHES[machine]
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    # Jump offsets count instructions after the current one. Layout, by index:
    #  0 ld arch; 1 arch ok? else KILL(10); 2 ld nr; 3 x32? -> DENY(9); 4 io_uring -> DENY(9);
    #  5 socket? else ALLOW(8); 6 ld domain; 7 AF_UNIX? -> ALLOW(8) else DENY(9); 8 ALLOW; 9 DENY; 10 KILL
    return [
        (_LD_W_ABS, 0, 0, _OFF_ARCH),
        (_JEQ_K, 0, 8, arch),
        (_LD_W_ABS, 0, 0, _OFF_NR),
        (_JGE_K, 5, 0, X32_SYSCALL_BIT if machine == "x86_64" else 0xFFFFFFFF),
        (_JEQ_K, 4, 0, nr_io_uring),
        (_JEQ_K, 0, 2, nr_socket),
        (_LD_W_ABS, 0, 0, _OFF_ARG0),
        (_JEQ_K, 0, 1, AF_UNIX),
        (_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (_RET_K, 0, 0, deny),
        (_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
    ]


class SocketFilter:
    """A ready-to-install filter; keep it alive until the child has exec'd."""

    def __init__(self, machine: str) -> None:
        insns = _program(machine)
        self._filters = (_SockFilter * len(insns))(*[_SockFilter(*i) for i in insns])
        self._prog = _SockFprog(len(insns), ctypes.cast(self._filters, ctypes.POINTER(_SockFilter)))
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl: Any = libc.prctl
        self._prctl.restype = ctypes.c_int
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        self._pointer = ctypes.addressof(self._prog)

    def install(self) -> None:
        """Install on the calling process (needs no_new_privs already set). Child-side only."""
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._pointer, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")


def prepare_socket_filter() -> Optional[SocketFilter]:
    """The filter for this machine, or None when its architecture is not supported."""
    machine = platform.machine()
    return SocketFilter(machine) if machine in _ARCHES else None
