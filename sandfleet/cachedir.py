"""The controller's own cache folder, ``~/.cache/sandfleet/controller``, used only when it is private.

What is kept there is trusted by the process that reads it: the code ``@dataclass`` generates
(:mod:`sandfleet.startup`) and each host's agent stamp (:mod:`sandfleet.transports.stamps`), which
lets a host skip checking its copy of the agent. So it is used only when the folder, and every
file in it, is this user's and writable by no one else (``sudo`` that keeps the caller's
``HOME`` then goes without).
"""

from __future__ import annotations

import os
import stat
from typing import Optional


def cache_folder() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sandfleet", "controller")


def private_folder(folder: Optional[str] = None) -> Optional[str]:
    """``folder`` (default :func:`cache_folder`), made if missing (0700), or None unless it and
    every file in it are this user's and writable by no one else."""
    folder = folder or cache_folder()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return folder if _private(folder) else None


def _private(folder: str) -> bool:
    try:
        paths = [folder, *(os.path.join(folder, name) for name in os.listdir(folder))]
        for path in paths:
            st = os.lstat(path)
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return False
    except OSError:
        return False
    return True


__all__ = ["cache_folder", "private_folder"]
