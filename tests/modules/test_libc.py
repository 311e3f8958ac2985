"""The agent's libc calls through ``_ctypes`` alone (``linux/libc.py``): each does what ctypes'
own does, read back from the kernel; the hardening and the Landlock probe that use them."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandfleet_agent.binding.facts import _landlock_abi
from sandfleet_agent.linux import libc

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

MODULES = str(Path(__file__).resolve().parents[2] / "modules")
GETPID = {"x86_64": 39, "aarch64": 172}


def test_a_call_returns_the_kernels_answer_and_errno() -> None:
    nr = GETPID.get(os.uname().machine)
    if nr is not None:
        assert libc.function("syscall")(nr) == os.getpid()
    assert libc.function("prctl")(-1, 0, 0, 0, 0) == -1
    assert libc.get_errno() == errno.EINVAL
    with pytest.raises(AttributeError):
        libc.function("no_such_function_in_libc")


def test_the_landlock_probe_gives_what_ctypes_gives() -> None:
    abi = ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1)
    assert _landlock_abi() == (abi if abi > 0 else 0)


def test_ctypes_where_ctypes_has_another_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "_ctypes", object())  # no CFuncPtr: the fallback (ctypes is imported)
    function, get_errno = libc._functions()
    assert function("prctl")(-1, 0, 0, 0, 0) == -1 and get_errno() == errno.EINVAL


def test_the_hardened_agent_is_a_subreaper_with_a_new_session_keyring() -> None:
    """Read back in a process of its own (the test process stays as it is): ``PR_GET_CHILD_SUBREAPER``
    and the session keyring's serial before and after."""
    script = textwrap.dedent("""
        import ctypes, os, sys
        sys.path.insert(0, sys.argv[1])
        from sandfleet_agent import spawn
        lib = ctypes.CDLL(None, use_errno=True)
        keyctl = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)
        def session():  # KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING, made if missing
            return lib.syscall(keyctl, 0, -3, 1) if keyctl else 0
        before = session()
        problems = spawn.harden_agent()
        flag = ctypes.c_int(-1)
        assert lib.prctl(37, ctypes.byref(flag), 0, 0, 0) == 0
        print(problems, flag.value, before != session() or before <= 0)
    """)
    out = subprocess.run([sys.executable, "-c", script, MODULES], capture_output=True, text=True, check=True).stdout
    problems, subreaper, new_keyring = out.rsplit(" ", 2)
    assert subreaper == "1"
    if problems == "[]":
        assert new_keyring.strip() == "True"
