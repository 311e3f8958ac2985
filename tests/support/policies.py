"""Operator policies for tests that exercise something other than the policy itself.

The built-in default refuses what many enforcement tests need (network full, writes outside the
workspace, unsandboxed tasks, Landlock); those tests send :data:`WIDE`, the widest policy an
operator can write, exactly as an inventory's ``sandfleet_policy`` would reach the agent.
"""

from __future__ import annotations

import dataclasses

from sandfleet_agent.portable.intent import Access, NetworkMode
from sandfleet_agent.portable.policy import Effective, Policy, complete
from sandfleet_agent.portable.wire import ExecRequest

WIDE = Effective((complete(Policy(
    source="test: widest operator policy",
    filesystem=((":root", Access.WRITE),),
    default_denies=False,
    network=NetworkMode.FULL,
    unsandboxed=True,
    linux_backends=("bwrap", "landlock"),
    hints=True,
)),))


def wide(request: ExecRequest) -> ExecRequest:
    """``request`` under :data:`WIDE`."""
    return dataclasses.replace(request, policy=WIDE)
