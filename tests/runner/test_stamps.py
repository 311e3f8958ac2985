"""The stamps the controller keeps of each host's agent copy (sandfleet/transports/stamps.py): kept
only in its private cache folder, only when they look like stamps, and read back as they went in.
What the host does with one: tests/runner/test_bootstrap.py (TestStamp) and test_ssh.py."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest

from sandfleet.transports import stamps

STAMP = "0123456789abcdef" * 2 + "01234567"


@pytest.fixture
def folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(stamps, "_folder", functools.cache(stamps._folder.__wrapped__))  # found anew
    return tmp_path / "sandfleet" / "controller"


def test_a_stamp_comes_back_for_its_key_only(folder: Path) -> None:
    assert stamps.remembered("web1") is None
    stamps.remember("web1", STAMP)
    assert stamps.remembered("web1") == STAMP and stamps.remembered("web2") is None
    kept = list((folder / "stamps").iterdir())
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o600
    assert (folder / "stamps").stat().st_mode & 0o777 == 0o700 and folder.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("bad", ["", "x" * 40, STAMP.upper(), STAMP + "0", "0123 4567", f"{STAMP}\n{STAMP}"])
def test_what_is_not_a_stamp_is_neither_kept_nor_read(folder: Path, bad: str) -> None:
    stamps.remember("web1", bad)
    assert stamps.remembered("web1") is None
    stamps.remember("web1", STAMP)
    path = next((folder / "stamps").iterdir())
    path.write_text(bad)
    assert stamps.remembered("web1") is None


def test_stamps_not_written_for_a_month_are_removed_when_another_is_kept(folder: Path) -> None:
    stamps.remember("old", STAMP)
    stamps.remember("recent", STAMP)
    month_ago = time.time() - stamps.KEEP_S - 60
    os.utime(stamps._path("old") or "", (month_ago, month_ago))
    stamps.remember("new", STAMP)
    assert stamps.remembered("old") is None and stamps.remembered("recent") == stamps.remembered("new") == STAMP


def test_a_folder_others_may_write_is_not_used(folder: Path) -> None:
    """Whoever could write a stamp there could make a host skip checking a copy they changed."""
    (folder / "stamps").mkdir(parents=True)
    folder.chmod(0o777)
    stamps.remember("web1", STAMP)
    assert stamps.remembered("web1") is None and list((folder / "stamps").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file of another owner")
def test_a_stamp_of_another_user_makes_the_folder_unused(folder: Path) -> None:
    stamps.remember("web1", STAMP)
    path = next((folder / "stamps").iterdir())
    os.chown(path, 65534, 65534)
    stamps._folder.cache_clear()  # a later run finds it so
    assert stamps.remembered("web1") is None
