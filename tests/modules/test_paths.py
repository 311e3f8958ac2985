"""The one path-containment test (modules/sandfleet_agent/paths.py) that binding, the backends and the ruleset
checks share: segment-wise, root and equality handled per function, Windows case-insensitive."""

from __future__ import annotations

import ntpath
import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandfleet_agent.paths import at_or_below, strictly_below

# Segment names that stress prefixes: "a" is a string prefix of "ab", "a." and "a-"; no "." or "..".
names = st.text(alphabet="abAB.-_ ", min_size=1, max_size=3).filter(lambda s: s not in (".", ".."))
segments = st.lists(names, max_size=4)
drives = st.sampled_from(["C:", "c:", "D:", "\\\\srv\\share", "\\\\SRV\\Share", "\\\\srv\\other"])


def posix(parts: list[str]) -> str:
    return "/" + "/".join(parts)


def windows(drive: str, parts: list[str]) -> str:
    return drive + "\\" + "\\".join(parts)


def _windows_key(path: str) -> list[str]:
    drive, rest = ntpath.splitdrive(path)
    return [drive.lower()] + [p.lower() for p in rest.split("\\") if p]


# -- the oracle: a prefix of the segment list ------------------------------------------------------


@given(segments, segments)
def test_posix_is_a_segment_prefix(path: list[str], ancestor: list[str]) -> None:
    below = path[:len(ancestor)] == ancestor
    assert at_or_below(posix(path), posix(ancestor)) is below
    assert strictly_below(posix(path), posix(ancestor)) is (below and path != ancestor)


@given(drives, segments, drives, segments)
def test_windows_is_a_case_insensitive_segment_prefix(d1: str, path: list[str], d2: str, ancestor: list[str]) -> None:
    p, a = windows(d1, path), windows(d2, ancestor)
    pk, ak = _windows_key(p), _windows_key(a)
    below = pk[:len(ak)] == ak
    assert at_or_below(p, a, windows=True) is below
    assert strictly_below(p, a, windows=True) is (below and pk != ak)


@given(segments, segments)
def test_at_or_below_is_strictly_below_or_the_same(path: list[str], ancestor: list[str]) -> None:
    p, a = posix(path), posix(ancestor)
    assert at_or_below(p, a) is (strictly_below(p, a) or posixpath.normpath(p) == posixpath.normpath(a))
    assert not (strictly_below(p, a) and strictly_below(a, p))


@given(segments, names, segments)
def test_a_sibling_sharing_a_string_prefix_is_not_below(base: list[str], name: str, rest: list[str]) -> None:
    """``/a/bc`` (or ``/a/b.``) is not inside ``/a/b``: containment is by segment, not by string."""
    for extra in ("c", ".", "-", " "):
        sibling = posix([*base, name + extra, *rest])
        assert not at_or_below(sibling, posix([*base, name]))
        assert not strictly_below(sibling, posix([*base, name]))
        win = windows("C:", [*base, name + extra, *rest])
        assert not at_or_below(win, windows("C:", [*base, name]), windows=True)


@given(segments)
def test_the_root_contains_every_absolute_path(path: list[str]) -> None:
    for root in ("/", "//", "///"):
        assert at_or_below(posix(path), root)
        assert strictly_below(posix(path), root) is bool(path)
    assert at_or_below(windows("C:", path), "C:\\", windows=True)
    assert at_or_below(windows("C:", path), "c:/", windows=True)
    assert not at_or_below(windows("C:", path), "D:\\", windows=True)
    assert at_or_below(windows("\\\\srv\\share", path), "\\\\SRV\\share", windows=True)


@given(segments, st.sampled_from(["", "/", "//"]), st.sampled_from(["", "/", "//"]))
def test_trailing_slashes_do_not_matter(path: list[str], t1: str, t2: str) -> None:
    p = posix(path)
    assert at_or_below(p + t1, p + t2)
    assert not strictly_below(p + t1, p + t2)
    assert at_or_below(p + "/x" + t1, p + t2) and strictly_below(p + "/x" + t1, p + t2)
    w = windows("C:", path)
    assert at_or_below(w + t1.replace("/", "\\"), w + t2, windows=True)
    assert not strictly_below(w + t1, w + t2.replace("/", "\\"), windows=True)


def _reference(path: str, ancestor: str) -> bool:
    """For absolute paths: always through normpath (no fast path), ``//`` read as ``/``."""
    def key(p: str) -> list[str]:
        norm = posixpath.normpath(p)
        return [s for s in norm.split("/") if s and s != "."]
    pk, ak = key(path), key(ancestor)
    return pk[:len(ak)] == ak


spellings = st.text(alphabet="/a.", max_size=8).map(lambda s: "/" + s)


@given(spellings, spellings)
def test_any_spelling_agrees_with_normalising_first(path: str, ancestor: str) -> None:
    """Dot segments, doubled and trailing slashes: the fast path for already-normal paths and
    normpath give one answer."""
    assert at_or_below(path, ancestor) is _reference(path, ancestor)
    assert strictly_below(path, ancestor) is (_reference(path, ancestor) and not _reference(ancestor, path))


# -- the edges each caller relied on -----------------------------------------------------------------


@pytest.mark.parametrize(("path", "ancestor", "at", "strict"), [
    ("/a/b", "/a/b", True, False),
    ("/a/b/c", "/a/b", True, True),
    ("/a/bc", "/a/b", False, False),
    ("/a/b", "/a/bc", False, False),
    ("/a", "/a/b", False, False),
    ("/a/b/", "/a/b", True, False),  # the same directory, never strictly below itself
    ("/a/b", "/a/b/", True, False),
    ("/", "/", True, False),
    ("/x", "/", True, True),
    ("//x", "/x", True, False),  # a leading // is / on Linux and macOS
    ("x", "/", False, False),  # relative paths are inside no absolute one
    ("/a/b/../c", "/a/b", False, False),  # lexical: normalised first
    ("/A/b", "/a", False, False),  # POSIX is case-sensitive
    ("/tmp", "/tmp", True, False),
    ("/tmpfoo", "/tmp", False, False),
])
def test_posix_cases(path: str, ancestor: str, at: bool, strict: bool) -> None:
    assert at_or_below(path, ancestor) is at
    assert strictly_below(path, ancestor) is strict


@pytest.mark.parametrize(("path", "ancestor", "at", "strict"), [
    ("C:\\Users\\Me", "c:\\users", True, True),
    ("c:/users/me", "C:\\Users\\Me", True, False),
    ("C:\\Users\\Me", "C:\\Users\\M", False, False),
    ("C:\\x", "C:\\", True, True),
    ("C:\\", "C:\\", True, False),
    ("D:\\x", "C:\\", False, False),
    ("C:x", "C:\\x", False, False),  # drive-relative is not the absolute path
    ("\\\\srv\\share\\x", "\\\\srv\\share", True, True),  # a share root without its backslash
    ("\\\\srv\\share\\", "\\\\srv\\share", True, False),
    ("\\\\srv\\sharex", "\\\\srv\\share", False, False),
    ("\\\\srv\\share\\x", "C:\\", False, False),
    ("C:\\a\\..\\b", "C:\\a", False, False),
])
def test_windows_cases(path: str, ancestor: str, at: bool, strict: bool) -> None:
    assert at_or_below(path, ancestor, windows=True) is at
    assert strictly_below(path, ancestor, windows=True) is strict


def test_posix_does_not_read_windows_spellings() -> None:
    """Without ``windows=True`` a backslash is an ordinary character and case counts."""
    assert not at_or_below("C:\\a\\b", "C:\\a")
    assert not at_or_below("/A", "/a")
    assert at_or_below("/A", "/a", windows=True)
