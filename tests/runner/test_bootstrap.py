"""The agent zip and the one command a host's shell runs, exercised locally through ``sh -c``."""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sandfleet import modules
from sandfleet.runner.bootstrap import AGENT_PACKAGE, MARKER, Reply, agent_bundle, build_bundle, parse_reply

FAKE_OLD_PYTHON = """\
#!{python}
import sys
args = sys.argv[1:]
code = args[args.index("-c") + 1]
sys.argv = ["-c"] + args[args.index("-c") + 2:]
sys.version_info = (3, 8, 10, "final", 0)
exec(compile(code, "<stub>", "exec"), {{"__name__": "__main__"}})
"""


def interpreters() -> list[str]:
    """Every Python on this machine (pyenv keeps old ones on developer machines), this one first."""
    found = {sys.executable}
    for pattern in ("/root/.pyenv/versions/*/bin/python[23].[0-9]*", "/usr/bin/python[23].[0-9]*"):
        found.update(p for p in glob.glob(pattern) if re.fullmatch(r".*python\d\.\d+", p))
    return sorted(found, key=lambda p: p != sys.executable)


def version_of(python: str) -> tuple[int, ...]:
    out = subprocess.run([python, "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout
    return tuple(int(n) for n in out.split())


def bootstrap(command: str, cache: Path, upload: bytes | None = None) -> tuple[list[str], subprocess.Popen[bytes]]:
    """Start the command as sshd would; send ``upload`` when asked. Returns the stub's lines."""
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert proc.stdin is not None and proc.stdout is not None
    lines: list[str] = []
    while True:
        line = proc.stdout.readline().decode()
        lines.append(line.strip())
        if not line or not line.startswith(f"{MARKER} upload"):
            return lines, proc
        proc.stdin.write(upload if upload is not None else agent_bundle().data)
        proc.stdin.flush()


def finish(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdin is not None
    proc.stdin.close()
    code = proc.wait(timeout=30)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return code


class TestBundle:
    def test_reproducible_and_named_by_its_hash(self) -> None:
        one, two = build_bundle(), build_bundle()
        assert one == two and len(one.sha256) == 64

    def test_holds_the_host_side_and_pure_python_dependencies_only(self) -> None:
        names = zipfile.ZipFile(io.BytesIO(agent_bundle().data)).namelist()
        assert names == sorted(names)
        assert {"__main__.py", f"{AGENT_PACKAGE}/agent.py", f"{AGENT_PACKAGE}/backends/bwrap.py",
                f"{AGENT_PACKAGE}/templates/bwrap.j2", "jinja2/__init__.py", "markupsafe/__init__.py"} <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith((".so", ".c", ".pyi"))]
        infos = zipfile.ZipFile(io.BytesIO(agent_bundle().data)).infolist()
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}

    def test_the_command_quotes_the_interpreter_and_carries_no_task_data(self) -> None:
        bundle = agent_bundle()
        command = bundle.command("/usr/bin/env python3")
        words = shlex.split(command)
        assert words[:3] == ["exec", "/usr/bin/env", "python3"]
        assert words[-3:] == ["sandfleet-agent", bundle.sha256, str(len(bundle.data))]
        assert shlex.split(bundle.command("/opt/my python/bin/python3"))[1] == "/opt/my"  # split like a shebang

    def test_noise_before_the_marker_is_not_a_reply(self) -> None:
        assert parse_reply(b"Welcome to host!\n") is None
        assert parse_reply(f"{MARKER} ready cached 3.11.2\n".encode()) == Reply("ready", ("cached", "3.11.2"))


class TestStub:
    def test_upload_then_cache_hit_then_the_agent_answers(self, tmp_path: Path) -> None:
        command = agent_bundle().command(sys.executable)
        lines, proc = bootstrap(command, tmp_path)
        assert lines == [f"{MARKER} upload", f"{MARKER} ready stored {'.'.join(map(str, sys.version_info[:3]))}"]
        assert finish(proc) == 0
        lines, proc = bootstrap(command, tmp_path)
        assert lines[0].startswith(f"{MARKER} ready cached ")
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b'{"v": 1, "init": {"workspace_roots": [], "sandbox_pin": null}}\n')
        proc.stdin.flush()
        assert "facts" in json.loads(proc.stdout.readline())["hello"]
        assert finish(proc) == 0
        cache = tmp_path / "sandfleet"
        assert cache.stat().st_mode & 0o777 == 0o700
        assert (cache / f"agent-{agent_bundle().sha256}.zip").stat().st_mode & 0o777 == 0o600

    def test_compiled_templates_and_renders_are_kept_in_the_bundle_and_reused(self, tmp_path: Path) -> None:
        """The agent keeps Jinja2's compiled templates and its rendered wrappers inside its own
        unpacked bundle (private, named by the bundle's hash), so later agents skip the compile
        and the render; the wrapper is the same."""
        sandboxed = {"v": 1, "id": "t", "argv": ["/bin/true"], "env": {}, "sandbox": {
            "permissions": [{"path": {"special": "root"}, "access": "read"}], "network": {"mode": "none"}}}
        init = {"v": 1, "init": {"workspace_roots": [str(tmp_path)], "sandbox_pin": None}}
        wrappers, caches = [], []
        for _ in range(2):
            _lines, proc = bootstrap(agent_bundle().command(sys.executable), tmp_path)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write((json.dumps(init) + "\n" + json.dumps(sandboxed) + "\n").encode())
            proc.stdin.flush()
            proc.stdout.readline()  # hello
            result = json.loads(proc.stdout.readline())
            assert finish(proc) == 0
            wrappers.append(result["wrapper"])
            caches.append({p.name: p.stat().st_mtime_ns for name in ("template-cache", "render-memo") for p in
                           (tmp_path / "sandfleet" / f"agent-{agent_bundle().sha256}" / name).iterdir()})
        assert wrappers[0] == wrappers[1] and wrappers[0], wrappers
        assert len(caches[0]) >= 2 and caches[0] == caches[1]  # written by the first agent, only read by the second
        for name in ("template-cache", "render-memo"):
            assert (tmp_path / "sandfleet" / f"agent-{agent_bundle().sha256}" / name).stat().st_mode & 0o077 == 0

    def test_an_installed_sandfleet_keeps_no_caches_in_its_own_folder(self, tmp_path: Path) -> None:
        """Installed, the host-side code is ``sandfleet.modules`` under a folder that also has a
        ``__main__.py``, like the unpacked zip; only the zip's own copy may keep caches beside it."""
        package = tmp_path / "sandfleet"
        shutil.copytree(Path(modules.__file__).parent, package / "modules",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (package / "__init__.py").write_text("")
        (package / "__main__.py").write_text("")
        sandboxed = {"v": 1, "id": "t", "argv": ["/bin/true"], "env": {}, "sandbox": {
            "permissions": [{"path": {"special": "root"}, "access": "read"}], "network": {"mode": "none"}}}
        lines = json.dumps({"v": 1, "init": {"sandbox_pin": None}}) + "\n" + json.dumps(sandboxed) + "\n"
        env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run([sys.executable, "-m", "sandfleet.modules.agent"], input=lines, capture_output=True,
                             text=True, env=env, cwd=tmp_path, timeout=60).stdout.splitlines()
        assert json.loads(out[1])["wrapper"], out  # it rendered a wrapper
        assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "__main__.py", "modules"]

    @pytest.mark.parametrize("python", interpreters())
    def test_every_interpreter_either_runs_the_agent_or_says_it_is_too_old(self, tmp_path: Path,
                                                                          python: str) -> None:
        lines, proc = bootstrap(agent_bundle().command(python), tmp_path)
        if version_of(python) < (3, 9):
            assert lines[-1].startswith(f"{MARKER} too-old ") and finish(proc) == 3
            return
        assert lines[-1].startswith(f"{MARKER} ready stored "), lines
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b'{"v": 1, "init": {}}\n{"v": 1, "id": "x", "argv": ["/bin/echo", "hi"], "sandbox": null, '
                         b'"policy": [{"source": "test", "policy": {"unsandboxed": true}}]}\n')
        proc.stdin.flush()
        assert "hello" in json.loads(proc.stdout.readline())
        assert json.loads(proc.stdout.readline())["stdout"] == "hi\n"
        assert finish(proc) == 0

    def test_a_corrupt_upload_is_refused_and_not_kept(self, tmp_path: Path) -> None:
        damaged = bytearray(agent_bundle().data)
        damaged[100] ^= 0xFF
        lines, proc = bootstrap(agent_bundle().command(sys.executable), tmp_path, bytes(damaged))
        assert lines[-1] == f"{MARKER} corrupt" and finish(proc) == 5
        assert not list(tmp_path.rglob("agent-*"))

    def test_an_old_python_says_so(self, tmp_path: Path) -> None:
        fake = tmp_path / "python3.8"
        fake.write_text(FAKE_OLD_PYTHON.format(python=sys.executable))
        fake.chmod(0o755)
        lines, proc = bootstrap(agent_bundle().command(str(fake)), tmp_path)
        assert lines == [f"{MARKER} too-old 3.8.10"] and finish(proc) == 3

    def test_a_hostile_interpreter_value_stays_one_program(self, tmp_path: Path) -> None:
        marker = tmp_path / "pwned"
        for python in (f"python3; touch {marker}", f"$(touch {marker})", f"python3 'x; touch {marker}", "`id`"):
            _, proc = bootstrap(agent_bundle().command(python), tmp_path)
            assert finish(proc) == 127 and not marker.exists(), python

    @pytest.mark.parametrize("python", ["/nonexistent/python3", "no-such-python3"])
    def test_a_missing_python_exits_127(self, tmp_path: Path, python: str) -> None:
        lines, proc = bootstrap(agent_bundle().command(python), tmp_path)
        assert lines == [""] and finish(proc) == 127
