"""paramiko, imported without the ``invoke`` package it pulls in (~100 ms of CPU per run).

Why: ``paramiko.config`` imports ``invoke`` (and through it ``unittest.mock``, ``asyncio`` and a
vendored YAML) only to run ssh_config ``Match exec`` lines. sandfleet reads ssh_config itself
(:mod:`.sshconfig`) and never calls paramiko's ``SSHConfig``, so the import is pure start-up cost:
about a tenth of a second of every run's CPU, measured with bench/compare.py. paramiko handles
a missing invoke (it only raises if a ``Match exec`` is evaluated); the block is lifted right
after paramiko is loaded, so anything else that imports invoke later gets the real one.
"""

from __future__ import annotations

import sys

if "paramiko" not in sys.modules and "invoke" not in sys.modules:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # import invoke -> ImportError
    try:
        import paramiko as paramiko
    finally:
        del sys.modules["invoke"]
else:
    import paramiko as paramiko

__all__ = ["paramiko"]
