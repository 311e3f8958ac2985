"""The two packages as they ship: the host side stands alone, and the wheel holds everything.

``sandfleet_agent`` travels to hosts that have none of the controller, so importing all of it must
pull in nothing but the standard library, Jinja2 and MarkupSafe. The wheel is found by package
discovery, not a hand-written list; it is built here, installed into a fresh venv and run from
another folder, the way a user who never cloned the repository runs it.
"""

from __future__ import annotations

import io
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from test_dry_run_mixed import INVENTORY as MIXED_FLEET

import sandfleet_agent
from sandfleet.transports.bootstrap import agent_bundle

ROOT = Path(__file__).resolve().parent.parent


def agent_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(sandfleet_agent.__path__, "sandfleet_agent."))


def test_every_host_side_module_is_found() -> None:
    """The walk below is only as good as what it finds: every source file is a module it lists."""
    files = {p.relative_to(ROOT / "modules").with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
             for p in (ROOT / "modules" / "sandfleet_agent").rglob("*.py")}
    assert files - {"sandfleet_agent"} == set(agent_modules())


def test_the_host_side_imports_nothing_but_the_standard_library_and_jinja2() -> None:
    """Every module imported in a fresh interpreter; what ends up in sys.modules is the proof (a
    lazy import inside a function counts once that function ran, so the render path runs too)."""
    code = f"""
import importlib, json, sys
before = set(sys.modules)  # what site's .pth files loaded is not the agent's doing
for name in {agent_modules()!r}:
    importlib.import_module(name)
from sandfleet_agent.backends.render import environment
environment().get_template("windows.ps1.j2")
tops = {{name.partition(".")[0] for name in set(sys.modules) - before}}
print(json.dumps(sorted(tops - set(sys.stdlib_module_names))))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "modules",
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "modules")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["jinja2", "markupsafe", "sandfleet_agent"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding sandfleet from its wheel (the dependencies come from this interpreter's
    site-packages: the test must not need the network)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # a copy: setuptools keeps a build/ folder in the tree it builds
    for name in ("sandfleet", "modules"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (base / "dist").glob("sandfleet-*.whl")
    venv.create(base / "venv", system_site_packages=True, with_pip=False, symlinks=True)
    python = base / "venv" / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    return base / "venv"


def run_installed(venv_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(venv_dir / "bin" / "sandfleet"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_the_wheel_is_what_runs(installed: Path, tmp_path: Path) -> None:
    code = "import sandfleet, sandfleet_agent; print(sandfleet.__file__); print(sandfleet_agent.__file__)"
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60).stdout.split()
    assert len(out) == 2 and all(path.startswith(str(installed)) for path in out), out


def test_the_default_job_runs_from_the_wheel_in_another_folder(installed: Path, tmp_path: Path) -> None:
    proc = run_installed(installed, "run", str(ROOT / "playbooks" / "example.yml"),
                         "-i", str(ROOT / "inventory" / "localhost.yml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "failed=0" in proc.stdout and "ok=" in proc.stdout


def test_every_template_ships_in_the_wheel(installed: Path, tmp_path: Path) -> None:
    """A dry-run over Linux, macOS and Windows hosts renders every backend's templates, including
    the launcher the Windows template includes (not a ``.j2`` file)."""
    (tmp_path / "inv.yml").write_text(MIXED_FLEET)
    (tmp_path / "pb.yml").write_text("- hosts: all\n  tasks:\n"
                                     "    - exec: {argv: [python3, -V], cwd: ':workspace_roots'}\n")
    proc = run_installed(installed, "run", "pb.yml", "-i", "inv.yml", "--dry-run", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    backends = {e["host"]: e["backend"] for e in map(json.loads, proc.stdout.splitlines())
                if e["event"] == "task_result"}
    assert backends == {"lin1": "bwrap", "mac1": "seatbelt", "win1": "windows"}


def test_the_agent_zip_holds_the_whole_host_side() -> None:
    """What a remote host runs is every file of the package (templates included, whatever their
    suffix), beside Jinja2 and MarkupSafe, and nothing of the controller."""
    package = ROOT / "modules" / "sandfleet_agent"
    expected = {f"sandfleet_agent/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.name != "py.typed"}
    names = set(zipfile.ZipFile(io.BytesIO(agent_bundle().data)).namelist())
    assert {n for n in names if n.startswith("sandfleet_agent/")} == expected
    assert {n.partition("/")[0] for n in names} == {"sandfleet_agent", "jinja2", "markupsafe", "__main__.py",
                                                    "MANIFEST.sha256"}
