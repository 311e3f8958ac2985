"""sandfleet: run commands across a fleet of hosts, each inside its own OS sandbox.

The controller (this package) loads playbooks and inventories, renders tasks and talks to hosts;
the host side lives in :mod:`sandfleet_agent` and imports nothing from here.
"""

__version__ = "0.1.0"
