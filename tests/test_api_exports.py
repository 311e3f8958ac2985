"""The public API is exactly what ``sandfleet.__all__`` lists: a name that appears or disappears
is a decision, so this test has to be changed with it."""

from __future__ import annotations

import subprocess
import sys

import sandfleet

PUBLIC = ["Fleet", "HostResult", "InputError", "Inventory", "Playbook", "RunResult", "Sandbox", "SandfleetError",
          "TaskResult", "TaskStatus", "UsageError", "__version__", "doctor", "facts", "load_inventory", "merge_results",
          "open_fleet", "run_command", "run_playbook", "stop_agents"]


def test_all_is_sorted_and_exactly_the_public_names() -> None:
    assert sandfleet.__all__ == PUBLIC == sorted(PUBLIC)
    assert set(sandfleet._HOMES) | {"__version__"} == set(PUBLIC)


def test_every_public_name_resolves_and_is_documented() -> None:
    for name in PUBLIC:
        value = getattr(sandfleet, name)
        assert name == "__version__" or (value.__doc__ or "").strip(), name


def test_importing_sandfleet_loads_no_machinery() -> None:
    """``import sandfleet`` (and so ``sandfleet --version``) must not pay for the API's imports."""
    code = ("import sys, sandfleet; "
            "print(sorted(m for m in sys.modules if m.startswith(('sandfleet', 'jinja2', 'paramiko', 'yaml'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['sandfleet', 'sandfleet_agent']"


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        sandfleet.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("sandfleet.no_such_name should not exist")
