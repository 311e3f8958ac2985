"""A working bwrap remembered between agents (``facts.kept_bwrap``), and the agent's fast exit.

An agent whose bwrap probe passed leaves its verdict in its private cache folder, keyed by what
decides it (boot, the trusted binary's inode/size/times, the user namespace sysctls, euid, user
namespace, seccomp mode); a later agent with the same key skips the bwrap start. A failure is
never kept, the binary always comes from the fresh trust check, a file others could write is
ignored, and a forged entry fails closed: the task under a bwrap that does not work does not run.
The fake bwraps are root-owned scripts in a root-only folder (as in test_bwrap_probe.py).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandfleet_agent import agent
from sandfleet_agent.binding import facts
from sandfleet_agent.binding.facts import BWRAP_DIRS_ENV, probe_bwrap
from support.ci import need

WORKSPACE = {"permissions": [{"path": {"special": "root"}, "access": "read"},
                             {"path": {"special": "workspace_roots"}, "access": "write"}],
             "network": {"mode": "none"}}
DENIED = 'echo "bwrap: setting up uid map: Permission denied" >&2; exit 1'


@pytest.fixture
def bwrap_dir(tmp_path: Path) -> Path:
    """A root-only folder (up to ``/``) the probe is told to search, for a fake bwrap."""
    need(hasattr(os, "geteuid") and os.geteuid() == 0, "root is needed for a root-only folder")
    tmp_path.chmod(0o755)
    d = tmp_path / "sbin"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d


def _fake(d: Path, body: str) -> Path:
    """A bwrap that logs each start to ``starts.log`` beside its folder, then runs ``body``."""
    exe = d / "bwrap"
    exe.write_text(f'#!/bin/sh\necho "$*" >> {d.parent / "starts.log"}\n{body}\n')
    exe.chmod(0o755)
    need(facts._trust_problem(str(exe)) == "", f"not root-only: {facts._trust_problem(str(exe))}")
    return exe


def _starts(d: Path) -> int:
    log = d.parent / "starts.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_working_bwrap_is_started_once_while_its_key_holds(bwrap_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _fake(bwrap_dir, "exit 0")
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(bwrap_dir))
    cache = tmp_path / "facts-cache"
    first, second = probe_bwrap(str(cache)), probe_bwrap(str(cache))
    assert first == second == facts.BackendStatus("bwrap", True, "", str(exe))
    assert _starts(bwrap_dir) == 1
    assert cache.stat().st_mode & 0o777 == 0o700 and (cache / "bwrap.json").stat().st_mode & 0o777 == 0o600
    assert probe_bwrap() == first and _starts(bwrap_dir) == 2  # no folder: always a start


def test_a_failing_bwrap_is_never_remembered(bwrap_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(bwrap_dir, DENIED)
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(bwrap_dir))
    cache = tmp_path / "facts-cache"
    assert not probe_bwrap(str(cache)).available and not probe_bwrap(str(cache)).available
    assert _starts(bwrap_dir) == 2 and not (cache / "bwrap.json").exists()


def test_a_changed_binary_an_old_entry_or_a_writable_file_probes_again(bwrap_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _fake(bwrap_dir, "exit 0")
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(bwrap_dir))
    cache = tmp_path / "facts-cache"
    kept = cache / "bwrap.json"
    probe_bwrap(str(cache))
    os.utime(exe, ns=(0, 0))  # another binary (its mtime and ctime differ)
    probe_bwrap(str(cache))
    assert _starts(bwrap_dir) == 2
    entry = json.loads(kept.read_text())
    kept.write_text(json.dumps({**entry, "at": entry["at"] - facts.BWRAP_KEPT_S - 1}))
    probe_bwrap(str(cache))
    assert _starts(bwrap_dir) == 3
    kept.chmod(0o622)  # others may write it: not believed
    probe_bwrap(str(cache))
    assert _starts(bwrap_dir) == 4
    kept.chmod(0o600)
    os.chown(kept, 1000, 0)  # another user's
    probe_bwrap(str(cache))
    assert _starts(bwrap_dir) == 5


@pytest.mark.parametrize("garbage", ["", "{not json", "[]", '"works"', "null", '{"key": null}', "\udcff"],
                         ids=["empty", "broken", "list", "string", "null", "no-key", "undecodable"])
def test_garbage_in_the_file_probes_again(bwrap_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          garbage: str) -> None:
    """Whatever else the file holds, the agent probes bwrap itself, and never fails for it."""
    _fake(bwrap_dir, "exit 0")
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(bwrap_dir))
    cache = tmp_path / "facts-cache"
    cache.mkdir(mode=0o700)
    kept = cache / "bwrap.json"
    kept.write_bytes(garbage.encode("utf-8", "surrogateescape"))
    kept.chmod(0o600)
    assert probe_bwrap(str(cache)).available
    assert _starts(bwrap_dir) == 1


def test_the_binary_never_comes_from_the_file(bwrap_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _fake(bwrap_dir, DENIED)
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(bwrap_dir))
    cache = _forge(tmp_path, str(exe), path="/tmp/planted-bwrap")
    status = probe_bwrap(str(cache))
    assert status.available and status.path == str(exe) and _starts(bwrap_dir) == 0


def _forge(tmp_path: Path, exe: str, **extra: object) -> Path:
    """A forged "bwrap works" entry under the very key this agent computes."""
    key = facts.bwrap_key(exe)
    assert key is not None
    cache = tmp_path / "facts-cache"
    cache.mkdir(mode=0o700)
    facts.keep_bwrap(str(cache), key, facts.BackendStatus("bwrap", True, "", exe))
    if extra:
        kept = cache / "bwrap.json"
        kept.write_text(json.dumps({**json.loads(kept.read_text()), **extra}))
    return cache


#: A real bwrap that fails in its child's set-up (after it reported the child's pid, before the
#: command's exec): a mount whose source does not exist.
FAILING_MOUNT = 'exec /usr/bin/bwrap --ro-bind /nonexistent-sandfleet-source /mnt "$@"'


@pytest.mark.parametrize("bwrap", [DENIED, FAILING_MOUNT], ids=["no-namespaces", "mount-fails"])
@pytest.mark.parametrize("reuse", [True, False], ids=["persistent", "fresh"])
def test_a_forged_entry_fails_closed(bwrap_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     reuse: bool, bwrap: str) -> None:
    """The agent believes the forgery (its hello says bwrap works) and picks bwrap; bwrap does not
    start, so the task is ``sandbox_unavailable`` with bwrap's own words (its status descriptor
    shows the command never started) and its command never runs, unsandboxed or otherwise."""
    need(bwrap == DENIED or os.path.exists("/usr/bin/bwrap"), "bubblewrap is not installed")
    exe = _fake(bwrap_dir, bwrap)
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(bwrap_dir))
    cache = _forge(tmp_path, str(exe))
    work = tmp_path / "work"
    work.mkdir()
    marker = work / "ran"
    init = {"v": 1, "init": {"workspace_roots": [str(work)], "sandbox_pin": "bwrap", "sandbox_reuse": reuse}}
    request = {"v": 1, "id": "t", "argv": ["/bin/sh", "-c", f"touch {marker}"], "env": {}, "sandbox": WORKSPACE}
    hello, result = _converse(cache, init, request)
    assert {b["name"]: b["available"] for b in hello["hello"]["facts"]["backends"]}["bwrap"] is True
    assert result["status"] == "sandbox_unavailable", result
    assert "bwrap could not set the sandbox up, so the command did not run" in result["message"]
    assert ("uid map" if bwrap == DENIED else "nonexistent-sandfleet-source") in result["message"]
    assert result.get("backend") == "bwrap"
    assert not marker.exists()
    assert _starts(bwrap_dir) >= 1  # it was bwrap that was tried, and nothing else


def test_fresh_facts_ignore_the_cache(bwrap_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sandfleet doctor``'s init line asks for fresh facts: the cache is neither read nor written."""
    exe = _fake(bwrap_dir, DENIED)
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(bwrap_dir))
    cache = _forge(tmp_path, str(exe))
    init = {"v": 1, "init": {"workspace_roots": ["/"], "sandbox_pin": None, "fresh_facts": True}}
    (hello,) = _converse(cache, init)
    assert {b["name"]: b["available"] for b in hello["hello"]["facts"]["backends"]}["bwrap"] is False
    assert _starts(bwrap_dir) == 1


def _converse(cache: Path, *lines: object) -> list[dict[str, object]]:
    out = io.StringIO()
    agent.serve(io.StringIO("".join(json.dumps(line) + "\n" for line in lines)), out, facts_cache=str(cache))
    return [json.loads(line) for line in out.getvalue().splitlines()]


# -- leave: the agent's exit without the interpreter's teardown -------------------------------------

_LEAVE = """
import atexit, sys
from sandfleet_agent.agent import leave
atexit.register(lambda: open(sys.argv[1], "w").write("saved"))
sys.stdout.write("buffered, not yet flushed")
leave(int(sys.argv[2]))
"""


@pytest.mark.parametrize("code", [0, 3])
def test_leave_runs_atexit_flushes_and_keeps_the_code(tmp_path: Path, code: int) -> None:
    saved = tmp_path / "saved"
    proc = subprocess.run([sys.executable, "-c", _LEAVE, str(saved), str(code)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": _modules()}, timeout=60)
    assert (proc.returncode, proc.stdout, saved.read_text()) == (code, "buffered, not yet flushed", "saved")


_GONE = """
import io, sys
from sandfleet_agent.agent import leave
class Gone(io.StringIO):
    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")
sys.stdout = Gone()
leave(3)
"""


def test_leave_with_the_reader_gone_exits_120_as_python_does() -> None:
    proc = subprocess.run([sys.executable, "-c", _GONE], capture_output=True,
                          env={**os.environ, "PYTHONPATH": _modules()}, timeout=60)
    assert proc.returncode == agent.FLUSH_FAILED == 120


def _modules() -> str:
    return str(Path(agent.__file__).resolve().parents[1])
