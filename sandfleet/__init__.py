"""sandfleet: run commands across a fleet of hosts, each inside its own OS sandbox.

The public API (docs/api.md)::

    import sandfleet
    inv = sandfleet.load_inventory("inventory/hosts.yml")
    result = sandfleet.run_playbook("site.yml", inventory=inv, limit="web")
    res = sandfleet.run_command(["python3", "-m", "pytest", "-q"], hosts="runners", inventory=inv,
                                sandbox=sandfleet.Sandbox(profile="workspace", network="none"))
    with sandfleet.open_fleet(inv, hosts="runners") as fleet:
        results = fleet.run(["make", "test"], cwd=":workspace_roots")

Everything else is internal. The names load on first use, so ``sandfleet --version`` and the
host side (``sandfleet_agent``, which imports nothing from here) stay quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sandfleet_agent import __version__ as __version__  # one version for both sides

if TYPE_CHECKING:  # what type checkers see; at run time each name loads on first use
    from sandfleet.api import Fleet as Fleet
    from sandfleet.api import HostResult as HostResult
    from sandfleet.api import RunResult as RunResult
    from sandfleet.api import Sandbox as Sandbox
    from sandfleet.api import TaskResult as TaskResult
    from sandfleet.api import doctor as doctor
    from sandfleet.api import facts as facts
    from sandfleet.api import load_inventory as load_inventory
    from sandfleet.api import merge_results as merge_results
    from sandfleet.api import open_fleet as open_fleet
    from sandfleet.api import run_command as run_command
    from sandfleet.api import run_playbook as run_playbook
    from sandfleet.api import stop_agents as stop_agents
    from sandfleet.errors import InputError as InputError
    from sandfleet.errors import SandfleetError as SandfleetError
    from sandfleet.errors import UsageError as UsageError
    from sandfleet.inventory import Inventory as Inventory
    from sandfleet.load.playbook import Playbook as Playbook
    from sandfleet.report.events import TaskStatus as TaskStatus

#: Public name -> the module that defines it.
_HOMES = {
    "Fleet": "sandfleet.api",
    "HostResult": "sandfleet.api",
    "RunResult": "sandfleet.api",
    "Sandbox": "sandfleet.api",
    "TaskResult": "sandfleet.api",
    "doctor": "sandfleet.api",
    "facts": "sandfleet.api",
    "load_inventory": "sandfleet.api",
    "merge_results": "sandfleet.api",
    "open_fleet": "sandfleet.api",
    "run_command": "sandfleet.api",
    "run_playbook": "sandfleet.api",
    "stop_agents": "sandfleet.api",
    "InputError": "sandfleet.errors",
    "SandfleetError": "sandfleet.errors",
    "UsageError": "sandfleet.errors",
    "Inventory": "sandfleet.inventory",
    "Playbook": "sandfleet.load.playbook",
    "TaskStatus": "sandfleet.report.events",
}

__all__ = ["Fleet", "HostResult", "InputError", "Inventory", "Playbook", "RunResult", "Sandbox", "SandfleetError",
           "TaskResult", "TaskStatus", "UsageError", "__version__", "doctor", "facts", "load_inventory",
           "merge_results", "open_fleet", "run_command", "run_playbook", "stop_agents"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sandfleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
