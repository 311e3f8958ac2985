"""sandfleet: run commands across a fleet of hosts, each inside its own OS sandbox.

The controller (this package) loads playbooks and inventories, renders tasks and talks to hosts;
the host side lives in :mod:`sandfleet_agent` and imports nothing from here.
"""

from sandfleet_agent import __version__ as __version__  # one version for both sides
