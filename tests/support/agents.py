"""Finding the agent processes a test started, and proving they (and their sandboxes) are gone.

Read from /proc, no psutil. A process is named by its pid *and* its start time, so a pid the
kernel reuses for something else never counts as a survivor; a zombie (dead, not yet reaped by
whoever inherited it) counts as gone. Scans stay below this test process (or one fixture host),
never machine-wide: other test runs on the same machine have agents of their own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

from support.sshd import descendants

#: What a local agent's command line holds (sandfleet/transports/local.py starts ``python -m sandfleet_agent.agent``).
LOCAL_AGENT = b"sandfleet_agent.agent"
#: What an agent started over SSH holds (the stub's argv, sandfleet/transports/bootstrap.py).
SSH_AGENT = b"sandfleet-agent"


def start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks, or None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def local_agents() -> list[int]:
    """The local agents this test process started (its children running ``sandfleet_agent.agent``)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and LOCAL_AGENT in cmdline(int(entry)).split(b"\0") and start_time(int(entry)) is not None:
            found.append(int(entry))
    return sorted(found)


def snapshot(pids: list[int]) -> dict[int, int]:
    """``pids`` and every process below them, each with its start time."""
    every = {p for pid in pids for p in (pid, *descendants(pid))}
    return {pid: t for pid in every if (t := start_time(pid)) is not None}


def survivors(procs: dict[int, int]) -> dict[int, bytes]:
    """Those of ``procs`` still running (same pid, same start time), with their command lines."""
    return {pid: cmdline(pid) for pid, t in procs.items() if start_time(pid) == t}


def wait_until(check: Callable[[], object], within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
