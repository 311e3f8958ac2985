"""The command line's start (sandfleet/startup.py, sandfleet/cachedir.py): dataclass code kept
between runs, only from a private folder, and the same classes either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandfleet.cachedir import _private, cache_folder

ROOT = Path(__file__).resolve().parent.parent

# A fresh interpreter: keep_dataclass_code changes dataclasses for its whole process.
PROBE = """
import dataclasses, json, sys
from sandfleet.startup import keep_dataclass_code
keep_dataclass_code(sys.argv[1])
from sandfleet_agent.portable.wire import ExecResult, Status
r = ExecResult(id="x", status=Status.OK, wrapper=("a",))
print(json.dumps({"repr": repr(r), "eq": r == ExecResult(id="x", status=Status.OK, wrapper=("a",)),
                  "kept": getattr(dataclasses, "exec", exec) is not exec}))
"""


def _probe(folder: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder)], check=True, capture_output=True, text=True,
                         cwd=ROOT).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_classes_are_the_same_compiled_or_kept(tmp_path: Path) -> None:
    folder = tmp_path / "controller"
    first, second = _probe(folder), _probe(folder)
    assert first == second and first["eq"] is True and first["kept"] is True
    assert [p.name for p in folder.iterdir()] == [f"dataclasses.{sys.implementation.cache_tag}.marshal"]


def test_a_folder_others_may_write_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "controller"
    folder.mkdir()
    folder.chmod(0o777)
    assert not _private(str(folder))
    assert _probe(folder)["kept"] is False
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file of another owner")
def test_a_file_of_another_user_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "controller"
    folder.mkdir(mode=0o700)
    planted = folder / f"dataclasses.{sys.implementation.cache_tag}.marshal"
    planted.write_bytes(b"")
    os.chown(planted, 65534, 65534)
    assert not _private(str(folder))


def test_the_folder_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_folder() == str(tmp_path / "sandfleet" / "controller")
