"""The compiled code of ``@dataclass`` kept between agent starts (sandfleet_agent.dataclass_code):
classes made from the kept code behave as compiled ones, a later start compiles nothing, and a
file that is not one is ignored. Each case runs in a fresh interpreter, as the stub does (what
the stub keeps: tests/runner/test_bootstrap.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sandfleet_agent

MODULES = str(Path(sandfleet_agent.__file__).parent.parent)

#: A frozen class with every kind of field, its behaviour printed as JSON. ``strict``: any compile
#: of dataclass code fails (only kept code may be used).
PROGRAM = """
import dataclasses, json, sys
sys.path.insert(0, {modules!r})
from sandfleet_agent import dataclass_code
dataclass_code.cache_compiled({folder!r})
if {strict!r}:
    def compile(*args, **kwargs):
        raise AssertionError("compiled, although the code was kept")
    dataclass_code.compile = compile
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Task:
    \"\"\"A task.\"\"\"
    name: str
    argv: tuple = ()
    env: dict = field(default_factory=dict, compare=False)

@dataclass
class Plain:
    \"\"\"Mutable.\"\"\"
    count: int = 0

task = Task("t", ("echo",))
try:
    task.name = "u"
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
plain = Plain()
plain.count += 2
print(json.dumps({{"repr": repr(task), "eq": task == Task("t", ("echo",)), "ne": task != Task("u"),
                   "hash": hash(task) == hash(Task("t", ("echo",))), "frozen": frozen, "env": task.env,
                   "plain": repr(plain), "file": Task.__init__.__code__.co_filename,
                   "replace": repr(dataclasses.replace(task, name="v"))}}))
"""


def run(folder: Path, strict: bool = False) -> dict[str, object]:
    code = PROGRAM.format(modules=MODULES, folder=str(folder), strict=strict)
    out = subprocess.run([sys.executable, "-E", "-s", "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


EXPECTED = {"repr": "Task(name='t', argv=('echo',), env={})", "eq": True, "ne": True, "hash": True,
            "frozen": True, "env": {}, "plain": "Plain(count=2)", "file": "<string>",
            "replace": "Task(name='v', argv=('echo',), env={})"}


def test_classes_made_from_kept_code_behave_as_compiled_ones(tmp_path: Path) -> None:
    folder = tmp_path / "dataclass-cache"
    assert run(folder) == EXPECTED  # compiled, then kept at exit
    [kept] = folder.iterdir()
    assert kept.name == f"dataclasses.{sys.implementation.cache_tag}.marshal" and folder.stat().st_mode & 0o077 == 0
    written = kept.stat().st_mtime_ns
    assert run(folder, strict=True) == EXPECTED  # a later start compiles nothing
    assert kept.stat().st_mtime_ns == written  # and, with nothing new, writes nothing


def test_a_file_that_is_not_kept_code_is_ignored_and_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "dataclass-cache"
    folder.mkdir()
    kept = folder / f"dataclasses.{sys.implementation.cache_tag}.marshal"
    for junk in (b"", b"not marshal data", b"\xe9\x00\x00\x00\x00"):  # the last: a marshalled int
        kept.write_bytes(junk)
        assert run(folder) == EXPECTED
        assert run(folder, strict=True) == EXPECTED


def test_without_a_folder_it_compiles_as_before(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert run(tmp_path / "file" / "dataclass-cache") == EXPECTED



#: The stub's order: defer inspect, then import every module of the agent (a resident imports them
#: all; the test imports each file it finds). Prints whether inspect was imported by then, and
#: what it gives once it is used.
DEFERRED = """
import json, sys
sys.path.insert(0, {modules!r})
from sandfleet_agent import dataclass_code
dataclass_code.defer_inspect()
import importlib, os
top = os.path.join({modules!r}, "sandfleet_agent")
for folder, _, files in os.walk(top):
    package = os.path.relpath(folder, {modules!r}).replace(os.sep, ".")
    for name in sorted(files):
        if name.endswith(".py") and name != "__init__.py":
            importlib.import_module(package + "." + name[:-3])
imported = type(sys.modules["inspect"]) is not dataclass_code.Deferred or "ast" in sys.modules
from dataclasses import dataclass

@dataclass
class Undocumented:
    count: int = 0

import inspect
print(json.dumps({{"imported": imported, "doc": Undocumented.__doc__,
                   "real": type(inspect) is not dataclass_code.Deferred,
                   "signature": str(inspect.signature(Undocumented)), "isclass": inspect.isclass(Undocumented)}}))
"""


def test_the_agent_never_imports_inspect_and_code_that_uses_it_gets_the_real_one() -> None:
    """Every module of the agent imports without inspect (each of its dataclasses has a docstring,
    so dataclasses never writes one); a class without one, and code that uses inspect, still get
    what the real module gives."""
    code = DEFERRED.format(modules=MODULES)
    out = subprocess.run([sys.executable, "-E", "-s", "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"imported": False, "doc": "Undocumented(count: int = 0)", "real": True,
                               "signature": "(count: int = 0) -> None", "isclass": True}
