"""What host-side code may know of a host's filesystem, as one small interface.

Binding (symlinked roots, ``gitdir:`` files) and the backends (which paths exist, deny-glob
matches) all look at the filesystem through a view: :class:`LocalFs` is the machine this code
runs on, exact; :class:`AssumedFs` is a host a dry-run may not touch, so it *assumes*: every path
exists as a plain directory, nothing is a symlink or a file, no glob matches anything yet (the
host expands them when the task runs), and on macOS the firmlinks apply (``/tmp`` is
``/private/tmp``), because Seatbelt matches canonical paths only.
"""

from __future__ import annotations

import ntpath
import os
import posixpath
import stat
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

from sandfleet_agent.paths import at_or_below


class FsView:
    exact = False

    def __init__(self, system: str = "linux") -> None:
        self.system = system
        self.path: Any = ntpath if system == "windows" else posixpath

    def kind(self, path: str) -> Optional[str]:
        """``dir``, ``file``, ``link``, ``other`` (not following a final symlink), or ``None``."""
        raise NotImplementedError

    def realpath(self, path: str) -> str:
        raise NotImplementedError

    def readlink(self, path: str) -> str:
        raise OSError(f"{path} is not a symlink")

    def scandir(self, path: str) -> Iterator[tuple[str, Optional[str]]]:
        """(name, kind) of each entry; nothing when unreadable."""
        return iter(())

    def read_head(self, path: str) -> Optional[str]:
        """The first 4 KiB of a text file (a ``.git`` file's ``gitdir:`` line), or None."""
        return None

    def is_dir(self, path: str) -> bool:
        return self.kind(self.realpath(path)) == "dir"

    def is_file(self, path: str) -> bool:
        return self.kind(self.realpath(path)) == "file"


class AssumedFs(FsView):
    _MACOS_LINKS = ("/tmp", "/var", "/etc")

    def kind(self, path: str) -> Optional[str]:
        return "dir"

    def realpath(self, path: str) -> str:
        norm = str(self.path.normpath(path))
        if self.system == "macos":
            for link in self._MACOS_LINKS:
                if at_or_below(norm, link):
                    return "/private" + norm
        return norm


class LocalFs(FsView):
    exact = True

    def __init__(self) -> None:
        from sandfleet_agent.binding.facts import host_os

        super().__init__(host_os())

    def kind(self, path: str) -> Optional[str]:
        mode = self.mode(path)
        return None if mode is None else _mode_kind(mode)

    def realpath(self, path: str) -> str:
        return _realpath(path, self.mode) if os.path is posixpath else os.path.realpath(path)

    def mode(self, path: str) -> Optional[int]:
        """``path``'s ``st_mode``, not following a final symlink; None when it cannot be lstat-ed."""
        try:
            return os.lstat(path).st_mode
        except OSError:
            return None

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def scandir(self, path: str) -> Iterator[tuple[str, Optional[str]]]:
        try:
            with os.scandir(path) as it:  # d_type: no stat per entry on large trees
                entries = [(e.name, "link" if e.is_symlink() else "dir" if e.is_dir(follow_symlinks=False)
                            else "file" if e.is_file(follow_symlinks=False) else "other") for e in it]
        except OSError:
            return iter(())  # unreadable to us is unreadable to the sandbox (same uid, no caps)
        return iter(entries)

    def read_head(self, path: str) -> Optional[str]:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fh:
                return fh.read(4096)
        except OSError:
            return None


class ReplayFs(LocalFs):
    """This machine's filesystem for one :func:`replay`: each path is lstat-ed once, and later
    questions of the same replay about it (its kind, a realpath through it) reuse that answer:
    a bwrap task's replay made ~80 lstats of ~27 paths (docs/performance.md "Host side: each task").

    Why it answers as a :class:`LocalFs` would: a change made before the replay began (by the
    task before, by the host) is seen by every lstat of it, the first included. Only a change
    made *while* it runs (by another process) can be missed by a later question, and an uncached
    replay misses it as well when it lands just after that path's last lstat; so does a fresh
    :func:`~executor.prepare` (its :class:`MemoFs` keeps each answer for the whole computation),
    and the sandbox is built after either: neither is a snapshot, and this is not less of one."""

    def __init__(self) -> None:
        super().__init__()
        self._modes: dict[str, Optional[int]] = {}

    def mode(self, path: str) -> Optional[int]:
        modes = self._modes
        if path in modes:
            return modes[path]
        mode = modes[path] = super().mode(path)  # a raise (a NUL in the path) is not kept
        return mode


#: One thing a view was asked and what it answered: (method, path, answer).
Observation = tuple[str, str, object]


class MemoFs(FsView):
    """Another view, its answers remembered for as long as this object lives: one task's binding,
    policy check and rendering ask about the same few dozen paths several times (a realpath is
    ~15 us, and a task asks ~60 of them). Made per task, so a path that appears between tasks is
    seen by the next.

    It also keeps, in order, each question it put to the inner view and the answer
    (:attr:`log`), so a later task may check that every answer is still the same (:func:`replay`)
    before it reuses what was computed from them (executor.py's prepare memo). ``tainted``: a
    question raised, and a raise is not recorded, so nothing computed from this view is reused."""

    def __init__(self, inner: FsView) -> None:
        super().__init__(inner.system)
        self.inner, self.exact = inner, inner.exact
        self._seen: dict[tuple[str, str], object] = {}
        self.log: list[Observation] = []
        self.tainted = False

    def _ask(self, method: str, path: str) -> object:
        key = (method, path)
        if key in self._seen:
            return self._seen[key]
        try:
            answer = _answer(self.inner, method, path)
        except BaseException:
            self.tainted = True
            raise
        self._seen[key] = answer
        self.log.append((method, path, answer))
        return answer

    def kind(self, path: str) -> Optional[str]:
        answer = self._ask("kind", path)
        assert answer is None or isinstance(answer, str)
        return answer

    def realpath(self, path: str) -> str:
        return str(self._ask("realpath", path))

    def readlink(self, path: str) -> str:
        return str(self._ask("readlink", path))

    def scandir(self, path: str) -> Iterator[tuple[str, Optional[str]]]:
        answer = self._ask("scandir", path)
        assert isinstance(answer, tuple)
        return iter(answer)

    def read_head(self, path: str) -> Optional[str]:
        answer = self._ask("read_head", path)
        assert answer is None or isinstance(answer, str)
        return answer


def _answer(view: FsView, method: str, path: str) -> object:
    """``view``'s answer to one question, as a value that compares by content."""
    if method == "scandir":
        return tuple(view.scandir(path))
    answer: object = getattr(view, method)(path)
    return answer


def replay(log: Sequence[Observation], view: FsView) -> bool:
    """Whether ``view`` answers every recorded question, asked again in the same order, exactly
    as recorded. Then a computation that reads the filesystem only through a :class:`MemoFs`
    would take the same steps and reach the same result now: by induction, each question it asks
    is the next recorded one (it depends only on earlier answers), and gets the same answer."""
    for method, path, answer in log:
        try:
            if _answer(view, method, path) != answer:
                return False
        except Exception:  # it answered before; a raise now is a change
            return False
    return True


def _realpath(path: str, mode: Callable[[str], Optional[int]]) -> str:
    """``os.path.realpath(path)`` (POSIX), cheaper where that is ``path`` itself: an absolute,
    normalised path none of whose prefixes is a symlink (``mode``: :meth:`LocalFs.mode`). Every
    version's realpath (3.9 to 3.14) rewrites only ``.``, ``..``, empty components and symlinks,
    and takes a prefix it cannot lstat for no symlink, so it returns such a path unchanged, after
    one lstat per prefix, as here. Why: its per-component Python was most of a replay's cost
    (docs/performance.md "Host side: each task"). Anything else, or any doubt (a symlink, a NUL,
    an unencodable name), it asks os.path.realpath."""
    if path[:1] != "/" or path[:2] == "//" or posixpath.normpath(path) != path:
        return os.path.realpath(path)
    start = 1
    while start < len(path):  # "/" has no prefix to look at
        end = path.find("/", start)
        end = len(path) if end < 0 else end
        try:
            prefix_mode = mode(path[:end])
        except ValueError:
            return os.path.realpath(path)
        if prefix_mode is not None and stat.S_ISLNK(prefix_mode):
            return os.path.realpath(path)
        start = end + 1
    return path


def _mode_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"
