"""The import rules docs/architecture.md states, checked: each folder imports only the layers
its ``__init__`` says it may, so the tree keeps meaning what it draws. Imports under
``if TYPE_CHECKING:`` are annotations, not dependencies, and do not count."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: layer -> the layers it may import (its own always). A layer is a folder, or a module at the top.
ALLOWED = {
    # the host side, bottom up
    "sandfleet_agent.paths": set(),
    "sandfleet_agent.dataclass_code": set(),  # the stub imports it before the agent: stdlib only
    "sandfleet_agent.portable": {"sandfleet_agent.paths"},
    "sandfleet_agent.linux.libc": set(),  # libc functions without the ctypes package: stdlib only
    "sandfleet_agent.spawn": {"sandfleet_agent.linux.libc"},
    "sandfleet_agent.bounds": {"sandfleet_agent.portable"},
    "sandfleet_agent.binding": {"sandfleet_agent.paths", "sandfleet_agent.portable", "sandfleet_agent.bounds",
                                "sandfleet_agent.linux"},  # facts probe Landlock and seccomp, lazily
    "sandfleet_agent.linux": {"sandfleet_agent.paths", "sandfleet_agent.portable", "sandfleet_agent.spawn",
                              "sandfleet_agent.bounds", "sandfleet_agent.backends.base"},
    "sandfleet_agent.network": {"sandfleet_agent.portable", "sandfleet_agent.backends.base"},
    "sandfleet_agent.backends": {"sandfleet_agent.paths", "sandfleet_agent.portable", "sandfleet_agent.binding",
                                 "sandfleet_agent.linux", "sandfleet_agent.network"},
    "sandfleet_agent.executor": {"sandfleet_agent.*"},
    "sandfleet_agent.agent": {"sandfleet_agent.*"},
    "sandfleet_agent.resident": {"sandfleet_agent.*"},  # serves runs as the agent does, in forks of itself
    # the controller: load and inventory know nothing of running; transports and report nothing
    # of each other; only run and the command line tie them together
    "sandfleet": {"sandfleet_agent"},  # the one version, kept by the host side
    "sandfleet.errors": set(),
    "sandfleet.cachedir": set(),  # the controller's private cache folder: stdlib only
    "sandfleet.templating": {"sandfleet.errors"},
    "sandfleet.load": {"sandfleet.errors", "sandfleet.templating", "sandfleet_agent.portable", "sandfleet_agent.paths"},
    "sandfleet.inventory": {"sandfleet.errors", "sandfleet.load", "sandfleet.templating",
                            "sandfleet_agent.portable", "sandfleet_agent.network.netpolicy"},
    "sandfleet.transports": {"sandfleet", "sandfleet.errors", "sandfleet.inventory", "sandfleet.cachedir",
                             "sandfleet_agent.*"},
    "sandfleet.report": {"sandfleet", "sandfleet.errors", "sandfleet.load", "sandfleet_agent.portable",
                         "sandfleet_agent.backends"},
    "sandfleet.run": {"sandfleet", "sandfleet.errors", "sandfleet.load", "sandfleet.inventory", "sandfleet.templating",
                      "sandfleet.report", "sandfleet.transports", "sandfleet_agent.*"},
    "sandfleet.api": {"sandfleet.*", "sandfleet_agent.*"},
    "sandfleet.cli": {"sandfleet.*"},
    "sandfleet.startup": {"sandfleet.cachedir", "sandfleet_agent.dataclass_code"},  # the command line's start
    "sandfleet.serve": {"sandfleet.*", "sandfleet_agent.portable"},  # over the API, speaking the wire's JSON rules
    "sandfleet.doctor": {"sandfleet.report", "sandfleet_agent.binding", "sandfleet_agent.linux",
                         "sandfleet_agent.portable"},  # judges an agent's facts: pure, no running
    "sandfleet.__main__": {"sandfleet.cli"},
}
#: The two packages. Named alone in ALLOWED they mean their ``__init__`` (``sandfleet.__version__``);
#: ``name.*`` means everything in them.
PACKAGES = ("sandfleet_agent", "sandfleet")


def modules() -> Iterator[tuple[str, Path]]:
    for base, package in ((ROOT / "modules", "sandfleet_agent"), (ROOT, "sandfleet")):
        for path in sorted((base / package).rglob("*.py")):
            yield ".".join(path.relative_to(base).with_suffix("").parts).removesuffix(".__init__"), path


def layer_of(module: str) -> str:
    """The most specific layer ``module`` belongs to (a package's ``__init__`` is its own layer)."""
    found = [layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")]
    return max(found, key=len) if found else module


def imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:  # ``from pkg import module`` imports the module
                full = f"{node.module}.{alias.name}"
                yield node.lineno, full if _is_module(full) else node.module


def _is_module(name: str) -> bool:
    parts = name.split(".")
    base = ROOT / "modules" if parts[0] == "sandfleet_agent" else ROOT
    target = base.joinpath(*parts)
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def allowed(source_layer: str, target: str) -> bool:
    if layer_of(target) == source_layer:
        return True
    for ok in ALLOWED.get(source_layer, set()):
        if ok.endswith(".*") and (target == ok[:-2] or target.startswith(ok[:-1])):
            return True
        if target == ok or (ok not in PACKAGES and target.startswith(ok + ".")):
            return True
    return False


def test_every_module_has_a_layer() -> None:
    assert [m for m, _ in modules() if layer_of(m) not in ALLOWED and m not in PACKAGES] == []


@pytest.mark.parametrize(("module", "path"), list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_follow_the_layers(module: str, path: Path) -> None:
    layer = layer_of(module)
    wrong = [f"{path.relative_to(ROOT)}:{line}: {target}" for line, target in imports(path)
             if target.split(".")[0] in PACKAGES and not allowed(layer, target)]
    assert wrong == [], f"{layer} may import only {sorted(ALLOWED.get(layer, set()))}"
