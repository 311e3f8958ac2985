"""What an agent's start leaves out (docs/performance.md, the agent's start): ``ctypes``,
``threading`` and ``getpass`` are not imported by the agent's modules and its hardening, nor
``ctypes`` and ``getpass`` by its facts probe; what replaced them answers as they do."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandfleet_agent.binding import facts

MODULES = str(Path(__file__).resolve().parents[2] / "modules")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_the_start_imports_no_ctypes_threading_or_getpass(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, sys.argv[1])
        from sandfleet_agent import agent, spawn
        from sandfleet_agent.binding.facts import probe
        spawn.harden_agent()
        found = [m for m in ("ctypes", "threading", "getpass", "termios") if m in sys.modules]
        probe((sys.argv[2],))  # bwrap probed anew here, by subprocess (which imports threading)
        found += [m for m in ("ctypes", "getpass", "termios") if m in sys.modules]
        print(json.dumps(found))
    """)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "USER": "someone",
           "LOGNAME": "someone"}  # as sshd sets them
    out = subprocess.run([sys.executable, "-I", "-S", "-c", script, MODULES, str(tmp_path)], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


@pytest.mark.parametrize("env", [{"LOGNAME": "a", "USER": "b"}, {"USER": "b", "LNAME": "c"}, {"LNAME": "c"},
                                 {"USERNAME": "d"}, {"LOGNAME": "", "USER": "b"}, {}])
def test_the_user_is_getpass_getuser(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert facts._user() == getpass.getuser()
