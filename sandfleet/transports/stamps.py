"""Each host's agent stamp, remembered by the controller so that the host can skip checking its copy.

The stub checks the agent's unpacked copy on every start, before it imports anything from it:
every file and this interpreter's bytecode hashed against the manifest the controller vouches
for (``sandfleet/transports/bootstrap.py``), ~5-7 ms of a host's CPU per run. After a check it
reports the copy's **stamp**: a digest of every checked file's device, inode, size, mtime and
ctime. The controller keeps it here, one file per host, login, become user, interpreter and
bundle, and sends it with the next start: a copy whose stamp is unchanged is the one checked
then, so the stub skips the hashing. No process on the host can make a changed copy keep its
stamp without root: writing a file, renaming or linking it sets its ctime to now, which nothing
but the clock can set back, and a new file has an inode of its own. A copy with a file changed in
the current second gets no stamp (the next start checks it): where a file system counts ctimes in
whole seconds, a change later in that second would keep the ctime.

The stamp is trusted as the check it replaces, so it is kept only in the controller's private
cache folder (:mod:`sandfleet.cachedir`): whoever could write there could make a host skip the
check of a copy they had changed. A stamp the host sends is kept only if it looks like one
(hex, :data:`LENGTH`), because it goes back on the next command line.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from functools import cache
from typing import Optional

from sandfleet.cachedir import cache_folder, private_folder

#: The stamp: 40 hex digits (blake2b, 20 bytes).
LENGTH = 40
#: A stamp not written for this long is removed when another is kept: those of hosts, users and
#: bundles no longer run do not pile up (one that is still in use only costs its host one check).
KEEP_S = 30 * 24 * 3600
_STAMP = re.compile(rf"[0-9a-f]{{{LENGTH}}}")


def valid(stamp: str) -> bool:
    return _STAMP.fullmatch(stamp) is not None


@cache
def _folder() -> Optional[str]:
    """The stamps' folder, once per process; None unless it and its parent are private."""
    if private_folder() is None:
        return None
    return private_folder(os.path.join(cache_folder(), "stamps"))


def _path(key: str) -> Optional[str]:
    folder = _folder()
    if folder is None:
        return None
    return os.path.join(folder, hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32])


def remembered(key: str) -> Optional[str]:
    """The stamp last reported for ``key``, or None."""
    path = _path(key)
    if path is None:
        return None
    try:
        with open(path, encoding="ascii") as fh:
            stamp = fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return stamp if valid(stamp) else None


def remember(key: str, stamp: str) -> None:
    """Keep ``stamp`` for ``key`` (whole or not at all; a stamp that does not look like one is
    not kept). Failing to keep it only costs the host a check next time."""
    path = _path(key)
    if path is None or not valid(stamp):
        return
    _forget_stale(os.path.dirname(path))
    part = f"{path}.{os.getpid()}"
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(fd, "w", encoding="ascii") as fh:
            fh.write(stamp + "\n")
        os.replace(part, path)
    except OSError:
        pass


def _forget_stale(folder: str) -> None:
    cutoff = time.time() - KEEP_S
    try:
        with os.scandir(folder) as entries:
            stale = [e.path for e in entries if e.stat(follow_symlinks=False).st_mtime < cutoff]
        for path in stale:
            os.unlink(path)
    except OSError:
        pass


__all__ = ["KEEP_S", "LENGTH", "remember", "remembered", "valid"]
