"""A libc function called through ``_ctypes`` alone, as ``ctypes.CDLL(None, use_errno=True)``
builds it: every agent start calls ``prctl`` and ``syscall`` (its hardening, the Landlock probe),
and the ``ctypes`` package around ``_ctypes`` would cost each start ~1.5 ms more
(docs/performance.md). ``ctypes`` itself where ``_ctypes`` has another shape. The persistent
sandbox's init builds its ``prctl`` the same way (``sandbox_init._prctl``), in a copy of its own:
it runs alone inside the sandbox, where nothing of sandfleet can be imported.

As with ctypes without ``argtypes``: an ``int`` argument is a C ``int``, ``None`` a null pointer,
the result a C ``int``; :func:`get_errno` is the ``errno`` the last such call left.
"""

from __future__ import annotations

from typing import Any, Callable


def _functions() -> tuple[Callable[[str], Callable[..., int]], Callable[[], int]]:
    try:
        base: Any = __import__("_ctypes")

        class CInt(base._SimpleCData):  # type: ignore[misc]
            _type_ = "i"

        class Function(base.CFuncPtr):  # type: ignore[misc]
            _flags_ = base.FUNCFLAG_CDECL | base.FUNCFLAG_USE_ERRNO
            _restype_ = CInt

        class Libc:
            _handle = base.dlopen(None, base.RTLD_LOCAL)

        libc = Libc()
        return (lambda name: Function((name, libc))), base.get_errno
    except (AttributeError, TypeError):
        import ctypes

        cdll = ctypes.CDLL(None, use_errno=True)
        return (lambda name: getattr(cdll, name)), ctypes.get_errno


#: ``function(name)``: libc's ``name`` (``AttributeError`` when it has none).
function, get_errno = _functions()
