"""Running a rendered bwrap wrapper by hand, as the agent does: its seccomp filter on fd 3.

A bwrap wrapper says ``--seccomp 3``; the agent hands the filter over on that descriptor when it
starts the command (modules/spawn.py). Tests that run a wrapper themselves do the same here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any, Optional

from sandfleet.modules import seccomp, spawn
from sandfleet.modules.backends.base import SECCOMP_FD, Wrapper


def run_wrapper(argv: Sequence[str], sockets: Optional[str] = "inet",
                **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(argv, **kwargs)`` with the seccomp filter of ``sockets`` on fd 3."""
    if sockets is None:
        return subprocess.run(list(argv), **kwargs)
    fd = spawn.input_pipe(seccomp.program(sockets))
    try:
        return subprocess.run(list(argv), pass_fds=(fd, SECCOMP_FD), preexec_fn=lambda: os.dup2(fd, SECCOMP_FD),
                              **kwargs)
    finally:
        os.close(fd)


def run(wrapper: Wrapper, prefix: Sequence[str] = (), **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Run ``wrapper`` (behind ``prefix``, e.g. a drop to another user) as the agent would."""
    return run_wrapper([*prefix, *wrapper.argv], wrapper.seccomp, **kwargs)
