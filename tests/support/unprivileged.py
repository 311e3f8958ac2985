"""Running test code as an unprivileged user, the way an agent logged in as one runs.

Landlock refuses to run tasks for an agent that is root (it would keep root's powers), so the
tests that exercise it as root fork, drop to the SSH fixtures' ``sandfleet-test`` user and run
the host-side code there. :func:`user_tree` makes a directory that user owns, outside the
private pytest temp dir.
"""

from __future__ import annotations

# What the host-side code imports lazily, imported here before any fork: the interpreter running
# the tests may live where the test user cannot read it (a pyenv under /root).
import ctypes  # noqa: F401
import encodings.ascii
import encodings.latin_1
import encodings.unicode_escape  # noqa: F401
import os
import pickle
import pwd
import resource  # noqa: F401
import shlex  # noqa: F401
import shutil
import subprocess  # noqa: F401
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TypeVar

import jinja2  # noqa: F401

from support.sshd import USER, ensure_user

T = TypeVar("T")


def account() -> pwd.struct_passwd:
    """The unprivileged test user (created when missing; needs root)."""
    return ensure_user(USER) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())


def as_user(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` as the unprivileged user: in a forked child that has dropped every
    id and capability, with that user's HOME; its result (or exception) comes back pickled.
    Without root, the caller already is unprivileged and ``fn`` runs here."""
    if os.geteuid() != 0:
        return fn(*args, **kwargs)
    user = account()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
            os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
            os.environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
            os.environ.pop("XDG_CACHE_HOME", None)
            try:
                outcome: tuple[bool, Any] = (True, fn(*args, **kwargs))
            except BaseException as exc:  # carried to the parent
                outcome = (False, exc)
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(outcome, out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as source:
        data = source.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


@contextmanager
def user_tree(prefix: str = "sandfleet-user-", mode: int = 0o777) -> Iterator[Path]:
    """A fresh directory owned by the unprivileged user, under ``/var/tmp`` (every user can
    traverse it; pytest's own temp dir is private to root). World-writable by default, so a
    sandbox run by root (no capabilities, hence no CAP_DAC_OVERRIDE) can write it too."""
    user = account()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")).resolve()
    path.chmod(mode)
    os.chown(path, user.pw_uid, user.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
