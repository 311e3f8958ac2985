"""The command line's start: the code ``@dataclass`` generates, kept compiled between runs.

Why: the ~100 dataclasses a run imports have their methods written as source and compiled at
every start, ~33 ms of CPU before the first connection (``python -X importtime``; the same source
every time). The agent's start already keeps that code (:mod:`sandfleet_agent.dataclass_code`);
the command line uses the same module, with its own file in ``~/.cache/sandfleet/controller``.
Only the ``sandfleet`` process itself does (:func:`sandfleet.cli.main` with the process's own
arguments), never a program that imports the API: it changes :mod:`dataclasses` for the process.

The file is trusted as an unchecked ``.pyc`` would be, so it is used only from a folder that is
this user's own and that no one else may write (``sudo`` that keeps the caller's ``HOME`` then
compiles, as without the file).
"""

from __future__ import annotations

import os
import stat
from typing import Optional


def cache_folder() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sandfleet", "controller")


def keep_dataclass_code(folder: Optional[str] = None) -> None:
    """Serve ``@dataclass``'s generated code from ``folder`` (default :func:`cache_folder`) for
    every class created from now on; without a private folder, classes compile as before."""
    folder = folder or cache_folder()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return
    if not _private(folder):
        return
    from sandfleet_agent.dataclass_code import cache_compiled

    cache_compiled(folder)


def _private(folder: str) -> bool:
    """The folder, and every file in it, this user's and writable by no one else."""
    try:
        paths = [folder, *(os.path.join(folder, name) for name in os.listdir(folder))]
        for path in paths:
            st = os.lstat(path)
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return False
    except OSError:
        return False
    return True


__all__ = ["cache_folder", "keep_dataclass_code"]
