"""Whether a native path lies inside another: the one containment test the sandbox code uses.

Containment is lexical and segment-wise: ``/a/bc`` is not inside ``/a/b``. Both paths are
normalised first (``posixpath``/``ntpath.normpath``: repeated separators, ``.``, ``..`` and
trailing separators go; on Windows ``/`` becomes ``\\``), so pass canonical (realpath'd) paths
when symlinks matter: ``..`` is resolved here without looking at the filesystem.

* POSIX: case-sensitive. The root (``/``, and ``//``, which Linux and macOS treat as ``/``)
  contains every absolute path and no relative one; a leading ``//`` is read as ``/``.
* Windows: case-insensitive (``str.lower``, as the rest of the Windows code compares paths);
  the drive or UNC share is part of the path, so ``C:\\x`` is not inside ``D:\\``, and the
  drive-relative ``C:x`` is not ``C:\\x``. ``C:\\`` contains every path on drive C, a share root
  ``\\\\server\\share`` every path on that share.

Two functions, so a caller says which it means: :func:`at_or_below` includes the path itself,
:func:`strictly_below` does not.
"""

from __future__ import annotations

import ntpath
import posixpath
from functools import lru_cache

#: Normalised keys remembered (a task compares the same few dozen paths hundreds of times:
#: binding, the policy check and the backend; docs/performance.md "Host side: each task").
KEY_CACHE = 4096


@lru_cache(maxsize=KEY_CACHE)
def _key(path: str, windows: bool) -> tuple[str, str]:
    """The normalised path without trailing separators (the root becomes ``""`` on POSIX, ``c:``
    for ``C:\\``), and the separator. A pure function of its arguments, so it is memoised."""
    if windows:
        return str(ntpath.normpath(path)).lower().rstrip("\\"), "\\"
    if path[:1] == "/" and "//" not in path and "/." not in path and path[-1] != "/":
        return path, "/"  # already normal (the common case: canonical paths), skip normpath
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm.rstrip("/"), "/"


def at_or_below(path: str, ancestor: str, *, windows: bool = False) -> bool:
    """Whether ``path`` is ``ancestor`` or lies below it."""
    p, sep = _key(path, windows)
    a = _key(ancestor, windows)[0]
    return p == a or p.startswith(a + sep)


def strictly_below(path: str, ancestor: str, *, windows: bool = False) -> bool:
    """Whether ``path`` lies below ``ancestor`` and is not ``ancestor`` itself."""
    p, sep = _key(path, windows)
    return p.startswith(_key(ancestor, windows)[0] + sep)
