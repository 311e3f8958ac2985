"""Whole files or none: a report a CI job reads must never be half written, even after Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp creates 0600; a report gets the mode any other new file would. Read once, at import,
#: because reading the umask means setting it, which is process-wide.
_UMASK = _read_umask()


__all__ = ["write_atomic"]
