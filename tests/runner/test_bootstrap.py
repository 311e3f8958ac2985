"""The agent zip and the one command a host's shell runs, exercised locally through ``sh -c``."""

from __future__ import annotations

import base64
import glob
import hashlib
import importlib.util
import io
import json
import marshal
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

import sandfleet_agent
from sandfleet.transports.base import AgentInit, AgentStream
from sandfleet.transports.bootstrap import (
    _STUB,
    AGENT_PACKAGE,
    MANIFEST,
    MARKER,
    Reply,
    agent_bundle,
    build_bundle,
    parse_reply,
)
from sandfleet.transports.stamps import valid

VERSION = ".".join(map(str, sys.version_info[:3]))

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


def bootstrap(command: str, cache: Path, upload: bytes | None = None, cwd: Path | None = None,
              raw: bool = False) -> tuple[list[str], subprocess.Popen[bytes]]:
    """Start the command as sshd would; send ``upload`` when asked. Returns the stub's lines,
    ``ready`` without the copy's stamp unless ``raw`` (:class:`TestStamp` is about it)."""
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "XDG_CACHE_HOME": str(cache)}, cwd=cwd)
    assert proc.stdin is not None and proc.stdout is not None
    lines: list[str] = []
    while True:
        line = proc.stdout.readline().decode()
        words = line.split()
        shown = " ".join(words[:4]) if not raw and words[:2] == [MARKER, "ready"] and len(words) == 5 else line.strip()
        lines.append(shown)
        if not line or not line.startswith(f"{MARKER} upload"):
            return lines, proc
        proc.stdin.write(upload if upload is not None else agent_bundle().data)
        proc.stdin.flush()


def start(cache: Path, python: str = sys.executable, cwd: Path | None = None, command: str | None = None,
          raw: bool = False) -> tuple[list[str], dict[str, Any]]:
    """One agent's start through its hello, then EOF; the stub's lines and the hello."""
    lines, proc = bootstrap(command or agent_bundle().command(python), cache, cwd=cwd, raw=raw)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b'{"v": 1, "init": {"workspace_roots": [], "sandbox_pin": null}}\n')
    proc.stdin.flush()
    hello = json.loads(proc.stdout.readline() or "null")
    assert finish(proc) == 0 and isinstance(hello, dict), (lines, hello)
    return lines, hello


def tree(cache: Path) -> Path:
    return cache / "sandfleet" / f"agent-{agent_bundle().sha256}"


def sent(name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(agent_bundle().data)).read(name)


def stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def plant_pyc(source: Path, code: str) -> Path:
    """A ``.pyc`` Python would run instead of ``source``: its header has the source's mtime and size."""
    st = source.stat()
    header = importlib.util.MAGIC_NUMBER + b"\0\0\0\0"
    header += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc = Path(importlib.util.cache_from_source(str(source)))
    pyc.write_bytes(header + marshal.dumps(compile(code, str(source), "exec")))
    return pyc


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
                f"{AGENT_PACKAGE}/backends/templates/bwrap.j2", "jinja2/__init__.py",
                "markupsafe/__init__.py"} <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith((".so", ".c", ".pyi"))]
        infos = zipfile.ZipFile(io.BytesIO(agent_bundle().data)).infolist()
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}

    def test_the_command_quotes_the_interpreter_and_carries_no_task_data(self) -> None:
        bundle = agent_bundle()
        command = bundle.command("/usr/bin/env python3")
        words = shlex.split(command)
        assert words[:3] == ["exec", "/usr/bin/env", "python3"]
        assert words[-4:] == ["sandfleet-agent", bundle.sha256, str(len(bundle.data)), bundle.manifest_sha256]
        assert shlex.split(bundle.command("/opt/my python/bin/python3"))[1] == "/opt/my"  # split like a shebang

    def test_noise_before_the_marker_is_not_a_reply(self) -> None:
        assert parse_reply(b"Welcome to host!\n") is None
        assert parse_reply(f"{MARKER} ready cached 3.11.2\n".encode()) == Reply("ready", ("cached", "3.11.2"))

    def test_the_manifest_lists_every_other_file_and_the_command_carries_its_hash(self) -> None:
        archive = zipfile.ZipFile(io.BytesIO(agent_bundle().data))
        listing = archive.read(MANIFEST)
        assert hashlib.sha256(listing).hexdigest() == agent_bundle().manifest_sha256
        listed = dict(line.split("  ", 1)[::-1] for line in listing.decode().splitlines())
        assert sorted(listed) == sorted(set(archive.namelist()) - {MANIFEST})
        assert all(hashlib.sha256(archive.read(name)).hexdigest() == listed[name] for name in listed)

    def test_only_a_repair_is_worth_a_warning(self) -> None:
        warning = Reply("ready", ("repaired", "3.11.2")).warning("web1")
        assert warning and "web1" in warning and "restored" in warning
        assert Reply("ready", ("cached", "3.11.2")).warning("web1") is None
        assert Reply("ready", ("stored", "3.11.2")).warning("web1") is None
        assert Reply("upload").warning("web1") is None

    def test_the_stub_holds_no_single_quote(self) -> None:
        assert "'" not in _STUB  # the command quotes it with single quotes: one inside would be escaped


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

    def test_dataclass_code_is_kept_in_the_bundle_and_a_later_agent_only_reads_it(self, tmp_path: Path) -> None:
        """The first agent keeps its dataclasses' compiled code in ``dataclass-cache/`` of its
        bundle; the next finds its copy as sent (``ready cached``) and rewrites nothing."""
        folder = tmp_path / "sandfleet" / f"agent-{agent_bundle().sha256}" / "dataclass-cache"
        seen = []
        for _ in range(2):
            lines, proc = bootstrap(agent_bundle().command(sys.executable), tmp_path)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b'{"v": 1, "init": {}}\n')
            proc.stdin.flush()
            assert "hello" in json.loads(proc.stdout.readline())
            assert finish(proc) == 0
            seen.append((lines[-1].split()[1:3], {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}))
        assert seen[0][0] == ["ready", "stored"] and seen[1][0] == ["ready", "cached"], seen
        assert len(seen[0][1]) == 1 and seen[0][1] == seen[1][1]
        assert folder.stat().st_mode & 0o077 == 0

    def test_an_installed_sandfleet_keeps_no_caches_in_its_own_folder(self, tmp_path: Path) -> None:
        """Installed, the host side is ``sandfleet_agent`` under a shared folder (site-packages),
        which may even hold a ``__main__.py`` like the unpacked zip: only the bootstrap stub names
        a cache folder, so an agent started any other way writes nothing beside its code."""
        shutil.copytree(Path(sandfleet_agent.__file__).parent, tmp_path / "sandfleet_agent",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (tmp_path / "__main__.py").write_text("")
        sandboxed = {"v": 1, "id": "t", "argv": ["/bin/true"], "env": {}, "sandbox": {
            "permissions": [{"path": {"special": "root"}, "access": "read"}], "network": {"mode": "none"}}}
        lines = json.dumps({"v": 1, "init": {"sandbox_pin": None}}) + "\n" + json.dumps(sandboxed) + "\n"
        env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run([sys.executable, "-m", "sandfleet_agent.agent"], input=lines, capture_output=True,
                             text=True, env=env, cwd=tmp_path, timeout=60).stdout.splitlines()
        assert json.loads(out[1])["wrapper"], out  # it rendered a wrapper
        assert sorted(p.name for p in tmp_path.iterdir()) == ["__main__.py", "sandfleet_agent"]
        assert not list((tmp_path / "sandfleet_agent").rglob("*cache*")) and not list(tmp_path.rglob("*memo*"))

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

    @pytest.mark.parametrize("python", interpreters())
    def test_nothing_is_imported_from_the_login_folder(self, tmp_path: Path, python: str) -> None:
        """sshd runs the command in the home folder, and ``python -c`` puts the current folder
        first on ``sys.path``: an ``os.py`` or ``hashlib.py`` there must not be what the stub runs."""
        home, marker = tmp_path / "home", tmp_path / "pwned"
        home.mkdir()
        for name in ("os", "hashlib", "io", "fcntl", "shutil", "zipfile", "py_compile", "json", AGENT_PACKAGE):
            (home / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")
        if version_of(python) < (3, 9):
            lines, proc = bootstrap(agent_bundle().command(python), tmp_path, cwd=home)
            assert lines[-1].startswith(f"{MARKER} too-old ") and finish(proc) == 3
        else:
            for state in ("stored", "cached"):  # the first start unpacks and compiles, the second only checks
                lines, hello = start(tmp_path, python, cwd=home)
                assert lines[-1].startswith(f"{MARKER} ready {state} ") and "hello" in hello
        assert not marker.exists(), marker.read_text()

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


UNSANDBOXED_ECHO = (b'{"v": 1, "id": "x", "argv": ["/bin/echo", "hi"], "sandbox": null, '
                    b'"policy": [{"source": "test", "policy": {"unsandboxed": true}}]}\n')


def init_line(root: Path, protect: tuple[str, ...] = ()) -> bytes:
    return AgentStream.init_line(AgentInit((str(root),), protect=protect))


class TestTheInitLineOnTheCommandLine:
    """Issue 20: the init line rides in the command (base64), so the controller sends nothing
    before the hello and waits for no reply but the stub's and the agent's; stdin carries only
    the zip (when asked) and then the requests."""

    def test_it_is_one_shell_inert_word_after_the_usual_ones(self, tmp_path: Path) -> None:
        bundle, line = agent_bundle(), init_line(tmp_path / "it's $(here)")
        words = shlex.split(bundle.command(sys.executable, init=line))
        assert words[-5:-1] == ["sandfleet-agent", bundle.sha256, str(len(bundle.data)), bundle.manifest_sha256]
        assert re.fullmatch(r"[A-Za-z0-9+/]+=*", words[-1]) and base64.b64decode(words[-1]) == line
        assert shlex.split(bundle.command(sys.executable))[-1] == bundle.manifest_sha256  # none: as before

    def test_a_fresh_host_gets_the_upload_and_the_agent_the_line(self, tmp_path: Path) -> None:
        work = tmp_path / "work"
        work.mkdir()
        lines, proc = bootstrap(agent_bundle().command(sys.executable, init=init_line(work)), tmp_path)
        assert lines == [f"{MARKER} upload", f"{MARKER} ready stored {VERSION}"]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(UNSANDBOXED_ECHO)  # a request, no init line: the agent has it already
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["hello"]["facts"]["workspace_roots"] == [str(work)]
        result = json.loads(proc.stdout.readline())  # fd 0 still read (and watched for a cancel) past the line
        assert (result["status"], result["stdout"]) == ("ok", "hi\n"), result
        assert finish(proc) == 0
        assert (tmp_path / "sandfleet" / f"agent-{agent_bundle().sha256}.zip").read_bytes() == agent_bundle().data

    def test_a_cached_host_needs_nothing_on_stdin_before_the_hello(self, tmp_path: Path) -> None:
        """Stdin closed before the stub says a word: ready and hello come all the same, so
        the controller has nothing to wait for between the exec and the hello."""
        start(tmp_path)
        work = tmp_path / "work"
        proc = subprocess.run(["sh", "-c", agent_bundle().command(sys.executable, init=init_line(work))],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                              env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
        out = proc.stdout.decode().splitlines()
        assert proc.returncode == 0 and out[0].startswith(f"{MARKER} ready cached {VERSION} "), proc
        assert json.loads(out[1])["hello"]["facts"]["workspace_roots"] == [str(work)] and len(out) == 2

    def test_a_line_longer_than_the_agent_reads_at_once_arrives_whole(self, tmp_path: Path) -> None:
        protect = tuple(f"/nonexistent/{i:05d}" for i in range(800))  # ~20 KiB: more than one 8 KiB read
        line = init_line(tmp_path, protect)
        assert len(line) > 16 * 1024
        lines, proc = bootstrap(agent_bundle().command(sys.executable, init=line), tmp_path)
        assert lines[-1] == f"{MARKER} ready stored {VERSION}"
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(UNSANDBOXED_ECHO)
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["hello"]["facts"]["workspace_roots"] == [str(tmp_path)]
        result = json.loads(proc.stdout.readline())
        assert (result["status"], result["stdout"]) == ("ok", "hi\n"), result
        assert finish(proc) == 0

    def test_a_corrupt_upload_is_still_refused_and_not_kept(self, tmp_path: Path) -> None:
        damaged = bytearray(agent_bundle().data)
        damaged[-100] ^= 0xFF
        command = agent_bundle().command(sys.executable, init=init_line(tmp_path))
        lines, proc = bootstrap(command, tmp_path, bytes(damaged))
        assert lines[-1] == f"{MARKER} corrupt" and finish(proc) == 5
        assert not list(tmp_path.rglob("agent-*"))


class TestTheCopyIsCheckedOnEveryStart:
    """The unpacked copy must be the one sent, whatever a process of that user did to it since.

    Each test first starts the agent once (upload, unpack, compile), then changes the copy the
    way a rogue process could, and starts it again."""

    def test_an_intact_copy_starts_as_cached_and_is_left_alone(self, tmp_path: Path) -> None:
        start(tmp_path)
        before = stamps(tree(tmp_path))
        lines, hello = start(tmp_path)
        assert lines == [f"{MARKER} ready cached {VERSION}"] and "facts" in hello["hello"]
        assert stamps(tree(tmp_path)) == before  # nothing unpacked, compiled or written again

    @pytest.mark.parametrize("change", ["edit", "delete"])
    def test_a_changed_agent_module_is_replaced_before_it_runs(self, tmp_path: Path, change: str) -> None:
        start(tmp_path)
        module, marker = tree(tmp_path) / AGENT_PACKAGE / "agent.py", tmp_path / "pwned"
        if change == "edit":
            module.write_text(module.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
        else:
            module.unlink()
        lines, hello = start(tmp_path)
        assert lines == [f"{MARKER} ready repaired {VERSION}"] and "hello" in hello
        assert not marker.exists() and module.read_bytes() == sent(f"{AGENT_PACKAGE}/agent.py")
        assert start(tmp_path)[0] == [f"{MARKER} ready cached {VERSION}"]  # said once, not at every start
        name = tree(tmp_path).name
        assert sorted(p.name for p in tree(tmp_path).parent.iterdir()) == [name, f"{name}.zip"]  # nothing left aside

    @pytest.mark.parametrize("added", ["json.py", "json.pyc", f"{AGENT_PACKAGE}/render_extra.py",
                                       "jinja2/new/__init__.py"])
    def test_an_added_module_is_removed(self, tmp_path: Path, added: str) -> None:
        """``json.py`` or a sourceless ``json.pyc`` at the top would shadow the standard library's
        ``json`` for the agent (the copy comes first on ``sys.path``): shown first, without the stub."""
        start(tmp_path)
        marker = tmp_path / "pwned"
        planted = tree(tmp_path) / added
        planted.parent.mkdir(exist_ok=True)
        code = f"open({str(marker)!r}, 'w').close()\n"
        if added.endswith(".pyc"):  # a header with no source to match: Python loads it as it is
            planted.write_bytes(importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(compile(code, added, "exec")))
        else:
            planted.write_text(code)
        name = added.rsplit(".", 1)[0].replace("/__init__", "").replace("/", ".")
        subprocess.run([sys.executable, "-E", "-s", "-S", "-c",
                        f"import sys; sys.path.insert(0, {str(tree(tmp_path))!r}); import {name}"], check=True)
        assert marker.exists()
        marker.unlink()
        lines, hello = start(tmp_path)
        assert lines == [f"{MARKER} ready repaired {VERSION}"] and "hello" in hello
        assert not planted.exists() and not marker.exists()

    def test_a_symlink_in_the_copy_is_a_change(self, tmp_path: Path) -> None:
        start(tmp_path)
        outside = tmp_path / "elsewhere"
        shutil.copytree(tree(tmp_path) / "markupsafe", outside)
        shutil.rmtree(tree(tmp_path) / "markupsafe")
        (tree(tmp_path) / "markupsafe").symlink_to(outside)
        assert start(tmp_path)[0] == [f"{MARKER} ready repaired {VERSION}"]
        assert not (tree(tmp_path) / "markupsafe").is_symlink()

    def test_a_planted_pyc_never_runs(self, tmp_path: Path) -> None:
        """A ``.pyc`` whose header matches its source's mtime and size is what Python runs, not
        the source (shown first, by importing the copy without the stub)."""
        start(tmp_path)
        marker = tmp_path / "pwned"
        pyc = plant_pyc(tree(tmp_path) / AGENT_PACKAGE / "agent.py",
                        f"open({str(marker)!r}, 'w').close()\ndef main():\n    return 0\n")
        subprocess.run([sys.executable, "-E", "-s", "-S", "-c",
                        f"import sys; sys.path.insert(0, {str(tree(tmp_path))!r}); import {AGENT_PACKAGE}.agent"],
                       check=True)
        assert marker.exists()  # without the stub, the planted code runs
        marker.unlink()
        lines, hello = start(tmp_path)
        assert lines == [f"{MARKER} ready repaired {VERSION}"] and "facts" in hello["hello"]
        assert not marker.exists()
        listed = (tree(tmp_path) / "__pycache__" / f"MANIFEST.{sys.implementation.cache_tag}.sha256").read_text()
        assert f"{hashlib.sha256(pyc.read_bytes()).hexdigest()}  {pyc.relative_to(tree(tmp_path))}\n" in listed

    def test_python_writes_no_bytecode_of_its_own(self, tmp_path: Path) -> None:
        """Only the stub compiles; a module whose ``.pyc`` is gone is compiled in memory only, and
        the missing file is itself a change."""
        start(tmp_path)
        pycs = sorted(tree(tmp_path).rglob("*.pyc"))
        assert pycs and all(p.parent.name == "__pycache__" for p in pycs)
        _lines, proc = bootstrap(agent_bundle().command(sys.executable), tmp_path)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b'{"v": 1, "init": {}}\n{"v": 1, "id": "x", "argv": ["/bin/true"], "sandbox": null, '
                         b'"policy": [{"source": "test", "policy": {"unsandboxed": true}}]}\n')
        proc.stdin.flush()
        proc.stdout.readline()
        assert json.loads(proc.stdout.readline())["status"] == "ok"
        assert finish(proc) == 0 and sorted(tree(tmp_path).rglob("*.pyc")) == pycs
        pycs[0].unlink()
        assert start(tmp_path)[0] == [f"{MARKER} ready repaired {VERSION}"]

    def test_a_corrupt_zip_and_a_changed_copy_ask_for_the_zip_again(self, tmp_path: Path) -> None:
        start(tmp_path)
        stored = tmp_path / "sandfleet" / f"agent-{agent_bundle().sha256}.zip"
        damaged = bytearray(stored.read_bytes())
        damaged[100] ^= 0xFF
        stored.write_bytes(bytes(damaged))
        (tree(tmp_path) / AGENT_PACKAGE / "agent.py").write_text("raise SystemExit(9)\n")
        lines, hello = start(tmp_path)
        assert lines == [f"{MARKER} upload", f"{MARKER} ready repaired {VERSION}"] and "hello" in hello
        assert stored.read_bytes() == agent_bundle().data
        assert (tree(tmp_path) / AGENT_PACKAGE / "agent.py").read_bytes() == sent(f"{AGENT_PACKAGE}/agent.py")

    def test_concurrent_starts_mend_the_copy_once(self, tmp_path: Path) -> None:
        start(tmp_path)
        (tree(tmp_path) / AGENT_PACKAGE / "wire.py").write_text("")
        results: list[list[str]] = []
        threads = [threading.Thread(target=lambda: results.append(start(tmp_path)[0])) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [[f"{MARKER} ready cached {VERSION}"]] * 3 + [[f"{MARKER} ready repaired {VERSION}"]]

    def test_another_interpreter_adds_its_own_bytecode_without_a_repair(self, tmp_path: Path) -> None:
        others = [p for p in interpreters() if version_of(p) >= (3, 9) and version_of(p)[:2] != sys.version_info[:2]]
        if not others:
            pytest.skip("one Python >= 3.9 of another version is needed")
        start(tmp_path)
        lines, _hello = start(tmp_path, others[0])
        assert lines[0].startswith(f"{MARKER} ready cached ")
        assert start(tmp_path)[0] == [f"{MARKER} ready cached {VERSION}"]
        assert len(list((tree(tmp_path) / "__pycache__").glob("MANIFEST.*.sha256"))) == 2


def stamped(cache: Path, stamp: str | None = None, command: str | None = None) -> tuple[list[str], str]:
    """One start given ``stamp``: the ``ready`` words (state, version) and the stamp it reported."""
    lines, hello = start(cache, command=command or agent_bundle().command(sys.executable, stamp=stamp), raw=True)
    words = lines[-1].split()
    assert words[:2] == [MARKER, "ready"] and len(words) == 5 and "hello" in hello, (lines, hello)
    return words[2:4], words[4]


def settled(cache: Path) -> str:
    """Once no file of the copy changed this second (the stub gives no stamp before: where ctimes
    count whole seconds, a change later in that second would keep it), a start's stamp."""
    newest = max(p.stat().st_ctime_ns for p in tree(cache).rglob("*") if p.is_file())
    while time.time_ns() // 10**9 * 10**9 <= newest:
        time.sleep(0.05)
    state, stamp = stamped(cache)
    assert state == ["cached", VERSION] and valid(stamp), (state, stamp)
    return stamp


class TestStamp:
    """A start given the stamp its copy had when last checked does not check it again; any change
    a process of the user can make to the copy changes the stamp, so that copy is checked and
    mended as without one (sandfleet/transports/stamps.py)."""

    def test_a_stamped_start_skips_the_check_and_an_unstamped_one_does_not(self, tmp_path: Path) -> None:
        """Shown with a command whose manifest hash is wrong: the check would call the copy
        changed and replace it; given the copy's stamp, the stub does not look."""
        start(tmp_path)
        stamp = settled(tmp_path)
        bundle = agent_bundle()
        wrong = "0" * len(bundle.manifest_sha256)
        assert stamped(tmp_path, stamp) == (["cached", VERSION], stamp)
        lying = bundle.command(sys.executable, stamp=stamp).replace(bundle.manifest_sha256, wrong)
        assert stamped(tmp_path, command=lying) == (["cached", VERSION], stamp)
        unstamped = bundle.command(sys.executable).replace(bundle.manifest_sha256, wrong)
        assert stamped(tmp_path, command=unstamped)[0] == ["repaired", VERSION]

    @pytest.mark.parametrize("change", ["append", "same size, mtime put back", "replaced by a copy", "linked aside",
                                        "added module", "planted pyc"])
    def test_every_change_changes_the_stamp_and_is_mended(self, tmp_path: Path, change: str) -> None:
        start(tmp_path)
        stamp = settled(tmp_path)
        module, marker = tree(tmp_path) / AGENT_PACKAGE / "agent.py", tmp_path / "pwned"
        payload = f"\nopen({str(marker)!r}, 'w').close()\n"
        st = module.stat()
        if change == "append":
            module.write_text(module.read_text() + payload)
        elif change == "same size, mtime put back":
            text = module.read_text()
            module.write_text(payload + text[len(payload):])
            assert module.stat().st_size == st.st_size
            os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif change == "replaced by a copy":
            copy = module.with_name("copy")
            shutil.copy2(module, copy)
            os.replace(copy, module)
        elif change == "linked aside":
            os.link(module, tmp_path / "aside")
            os.unlink(tmp_path / "aside")
        elif change == "added module":
            (tree(tmp_path) / AGENT_PACKAGE / "evil.py").write_text(payload)
        else:
            plant_pyc(module, payload)
        state, now = stamped(tmp_path, stamp)
        assert now != stamp
        assert state == (["cached", VERSION] if change in ("replaced by a copy", "linked aside") else
                         ["repaired", VERSION])  # the same bytes: nothing to mend, but checked
        assert not marker.exists() and module.read_bytes() == sent(f"{AGENT_PACKAGE}/agent.py")
        again = settled(tmp_path)
        assert again != stamp and stamped(tmp_path, again) == (["cached", VERSION], again)

    def test_a_stamp_of_another_copy_only_means_a_check(self, tmp_path: Path) -> None:
        start(tmp_path)
        stamp = settled(tmp_path)
        assert stamped(tmp_path, "ab" * 20) == (["cached", VERSION], stamp)
        shutil.rmtree(tree(tmp_path))
        assert stamped(tmp_path, stamp)[0] == ["cached", VERSION]  # unpacked again from the stored zip
        assert settled(tmp_path) != stamp

    @pytest.mark.parametrize("bad", ["", "x", "AB" * 20, "ab" * 21, "ab; rm -rf ~", "-"])
    def test_the_command_takes_only_a_stamp(self, bad: str) -> None:
        with pytest.raises(ValueError, match="stamp"):
            agent_bundle().command(sys.executable, stamp=bad)

    def test_a_stamped_start_never_loads_openssl(self, tmp_path: Path) -> None:
        """Hashing the copy was the start's one use of hashlib, whose OpenSSL costs ~2-4 ms: with
        the stamp, neither the stub nor the agent maps libcrypto (the policy digest is CPython's
        own SHA-256)."""
        start(tmp_path)
        stamp = settled(tmp_path)
        for given, loaded in ((None, True), (stamp, False)):
            lines, proc = bootstrap(agent_bundle().command(sys.executable, stamp=given), tmp_path)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b'{"v": 1, "init": {"workspace_roots": [], "sandbox_pin": null}}\n')
            proc.stdin.flush()
            assert "hello" in json.loads(proc.stdout.readline()), lines
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            assert finish(proc) == 0
            assert ("libcrypto" in maps) is loaded, given
