"""The code ``@dataclass`` generates, compiled once per bundle and interpreter, not at every start.

Why: ``@dataclass`` writes a class's methods (``__init__``, ``__repr__``, ``__eq__``; for a frozen
class also ``__setattr__``, ``__delattr__`` and ``__hash__``) as Python source and compiles it when
the class is created: ~0.25 ms a class, 7-11 ms of every agent start (Python 3.9 to 3.13) for the
~35 classes the agent imports, the same source every time (``python bench/agent_cost.py``).
:func:`cache_compiled` keeps the compiled code in a file of the agent's own cache folder, keyed by
that exact source, and gives :mod:`dataclasses` an ``exec`` that runs the kept code instead of
compiling it again: running the code that ``compile(source, "<string>", "exec")`` made is what
``exec(source)`` does (dataclasses.py has no ``__future__`` import whose flags an ``exec`` there
would pass on; Python 3.9 to 3.13 all call ``exec`` by that name). Loading the file costs ~0.5 ms. A
source not in it is compiled as before, and the file is rewritten when the agent exits.

Only the bootstrap stub calls it, before it imports the agent, with a folder inside the unpacked
bundle (private to the user, named by the bundle's hash); like Jinja2's compiled templates
(:func:`sandfleet_agent.backends.render.cache_compiled_templates`), the file is trusted as an
unchecked ``.pyc`` would be (sandfleet/transports/bootstrap.py). A Python whose dataclasses no
longer calls ``exec`` by that name only compiles as before.

:func:`defer_inspect` takes the other half of ``@dataclass``'s start-up cost: :mod:`dataclasses`
imports :mod:`inspect` (and with it ``ast``, ``dis``, ``tokenize``, ...: ~5-9 ms of CPU) for one
use, the ``__doc__`` it writes for a class that has none. Every class of the agent has one.
"""

from __future__ import annotations

import atexit
import marshal
import os
import sys
import types
from collections.abc import Mapping
from types import CodeType
from typing import Any, Optional, Union

#: Entries the file keeps. Beyond it (a Python whose generated source varied from start to
#: start), it is rewritten with what this start used alone, so it never grows without bound.
MAX_ENTRIES = 2000


class Deferred(types.ModuleType):
    """A module in ``sys.modules`` that is not imported yet: the first attribute asked of it
    imports the real one, which takes its place there; the attribute comes from the real one.

    Not :class:`importlib.util.LazyLoader`: its module loads at the first ``__spec__`` lookup,
    which the import system makes for every ``import`` statement naming it."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(__import__(self.__name__), name)


def defer_inspect() -> None:
    """Let :mod:`inspect` be imported when first used, not with :mod:`dataclasses`; call it
    before ``dataclasses`` is imported. Nothing changes for code that uses ``inspect``: a module
    that imports it gets the stand-in, whose attributes are the real module's."""
    if "inspect" not in sys.modules:
        sys.modules["inspect"] = Deferred("inspect")


def cache_compiled(directory: str) -> None:
    """Serve the code ``@dataclass`` compiles from ``directory``, for every class created from now
    on in this process; call it before the agent's modules are imported. Never raises: without
    the folder (read-only) or a cache tag (an interpreter that keeps no bytecode), it compiles."""
    import dataclasses  # here, not above: after defer_inspect

    tag = sys.implementation.cache_tag
    if tag is None:
        return
    if sys.flags.optimize:  # the code compile makes under -O is not the same
        tag += f".opt-{sys.flags.optimize}"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return
    path = os.path.join(directory, f"dataclasses.{tag}.marshal")
    kept = _load(path)
    used: set[str] = set()
    fresh: list[str] = []

    def exec_kept(source: Union[str, bytes, CodeType], globals: Optional[dict[str, Any]] = None,
                  locals: Optional[Mapping[str, object]] = None, /, **options: Any) -> None:
        if globals is None:  # exec's default: the caller's scope (dataclasses always gives its own)
            frame = sys._getframe(1)
            globals, locals = frame.f_globals, frame.f_locals if locals is None else locals
        if isinstance(source, str):
            used.add(source)
            code = kept.get(source)
            if code is None:
                code = kept[source] = compile(source, "<string>", "exec", dont_inherit=True)
                fresh.append(source)
            source = code
        exec(source, globals, locals, **options)

    dataclasses.exec = exec_kept  # type: ignore[attr-defined]
    atexit.register(_save, path, kept, used, fresh, os.getpid())


def _load(path: str) -> dict[str, CodeType]:
    try:
        with open(path, "rb") as fh:
            kept = marshal.loads(fh.read())  # not marshal.load(fh): it reads in small pieces, ~3x slower
    except (OSError, EOFError, ValueError, TypeError):  # none yet, or unreadable: compile
        return {}
    if type(kept) is not dict or not all(type(k) is str and type(v) is CodeType for k, v in kept.items()):
        return {}
    return kept


def _save(path: str, kept: dict[str, CodeType], used: set[str], fresh: list[str], pid: int) -> None:
    """At exit, when this start compiled anything: the file, whole or absent (agents run side by
    side). Not from a fork of the agent (a resident agent's), which exits on its own."""
    if not fresh or os.getpid() != pid:
        return
    entries = kept if len(kept) <= MAX_ENTRIES else {source: kept[source] for source in used}
    part = f"{path}.{pid}"
    try:
        with open(part, "wb") as fh:
            marshal.dump(entries, fh)
        os.replace(part, path)
    except (OSError, ValueError):
        pass  # a file that cannot be written only costs the next agent the compile
