"""The command line's start: the code ``@dataclass`` generates, kept compiled between runs.

Why: the ~100 dataclasses a run imports have their methods written as source and compiled at
every start, ~33 ms of CPU before the first connection (``python -X importtime``; the same source
every time). The agent's start already keeps that code (:mod:`sandfleet_agent.dataclass_code`);
the command line uses the same module, with its own file in ``~/.cache/sandfleet/controller``.
Only the ``sandfleet`` process itself does (:func:`sandfleet.cli.main` with the process's own
arguments), never a program that imports the API: it changes :mod:`dataclasses` for the process.

The file is trusted as an unchecked ``.pyc`` would be, so it is used only from a folder that is
this user's own and that no one else may write (:mod:`sandfleet.cachedir`; ``sudo`` that keeps
the caller's ``HOME`` then compiles, as without the file).
"""

from __future__ import annotations

from typing import Optional

from sandfleet.cachedir import private_folder


def keep_dataclass_code(folder: Optional[str] = None) -> None:
    """Serve ``@dataclass``'s generated code from ``folder`` (default the controller's cache
    folder, :mod:`sandfleet.cachedir`) for every class created from now on; without a private
    folder, classes compile as before."""
    folder = private_folder(folder)
    if folder is None:
        return
    from sandfleet_agent.dataclass_code import cache_compiled

    cache_compiled(folder)


__all__ = ["keep_dataclass_code"]
