"""Running a rendered bwrap wrapper by hand, as the agent does: its seccomp filter on fd 3.

A bwrap wrapper says ``--seccomp 3 --json-status-fd 4``; the agent hands the filter over on fd 3
and reads bwrap's status from fd 4 when it starts the command (modules/sandfleet_agent/spawn.py). Tests that run a
wrapper themselves do the same here (fd 4 goes to /dev/null).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any, Optional

from sandfleet_agent import spawn
from sandfleet_agent.backends.base import SECCOMP_FD, STATUS_FD, Wrapper
from sandfleet_agent.linux import seccomp


def run_wrapper(argv: Sequence[str], sockets: Optional[str] = "inet",
                **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(argv, **kwargs)`` with the seccomp filter of ``sockets`` on fd 3 and
    /dev/null on fd 4 (bwrap's status)."""
    if sockets is None:
        return subprocess.run(list(argv), **kwargs)
    fd = spawn.input_pipe(seccomp.program(sockets))
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    def place() -> None:
        os.dup2(fd, SECCOMP_FD)
        os.dup2(null, STATUS_FD)
    try:
        return subprocess.run(list(argv), pass_fds=(fd, null, SECCOMP_FD, STATUS_FD), preexec_fn=place, **kwargs)
    finally:
        os.close(fd)
        os.close(null)


def run(wrapper: Wrapper, prefix: Sequence[str] = (), **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Run ``wrapper`` (behind ``prefix``, e.g. a drop to another user) as the agent would."""
    return run_wrapper([*prefix, *wrapper.argv], wrapper.seccomp, **kwargs)
