"""Choosing the sandbox for a task on this host (DESIGN §6.3).

Linux: bubblewrap when it works here, else Landlock; macOS: Seatbelt; Windows: its own backend.
A pin from the inventory is honoured or refused, never silently replaced. A per-OS hint
(``linux: {prefer: landlock}``) only reorders the candidates. When no candidate can enforce the
policy the task fails closed with every candidate's reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Optional

from ..binding import BoundPolicy
from ..facts import BACKENDS_BY_OS, HostFacts
from .base import Backend, ProxyEndpoint, Refused, Wrapper

_CLASSES: Mapping[str, tuple[str, str]] = {
    "bwrap": ("bwrap", "Bwrap"),
    "landlock": ("landlock", "Landlock"),
    "seatbelt": ("seatbelt", "Seatbelt"),
    "windows": ("windows", "WindowsSandbox"),
}


def backend_class(name: str) -> type[Backend]:
    module, cls = _CLASSES[name]
    mod = importlib.import_module(f".{module}", __name__)
    found: type[Backend] = getattr(mod, cls)
    return found


def candidates(facts: HostFacts, pin: Optional[str], hints: Mapping[str, object]) -> list[str]:
    if pin:
        if pin not in BACKENDS_BY_OS.get(facts.os, ()):
            raise Refused(f"sandfleet_sandbox={pin} cannot run on a {facts.os} host "
                          f"(allowed there: {', '.join(BACKENDS_BY_OS.get(facts.os, ())) or 'none'})")
        return [pin]
    order = list(BACKENDS_BY_OS.get(facts.os, ()))
    prefer = hints.get("prefer")
    if isinstance(prefer, str) and prefer in order:
        order.remove(prefer)
        order.insert(0, prefer)
    return order


def wrap(
    policy: BoundPolicy, argv: Sequence[str], facts: HostFacts, pin: Optional[str] = None,
    proxy: Optional[ProxyEndpoint] = None,
) -> Wrapper:
    """The wrapper of the first candidate that is available here and can enforce ``policy``."""
    reasons: list[str] = []
    for name in candidates(facts, pin, policy.hints):
        status = facts.backend(name)
        if status is None or not status.available:
            reasons.append(f"{name}: {status.reason if status else 'not probed on this host'}")
            continue
        try:
            return backend_class(name)(facts, proxy).render(policy, argv)
        except Refused as exc:
            reasons.append(f"{name}: {exc}")
        except ImportError:
            reasons.append(f"{name}: not supported by this version of sandfleet")
    pinned = f" (pinned by sandfleet_sandbox={pin})" if pin else ""
    raise Refused(f"no sandbox can enforce this task's intent on this {facts.os} host{pinned}: "
                  + "; ".join(reasons or ["no sandbox exists for this OS"]))


__all__ = ["Backend", "ProxyEndpoint", "Refused", "Wrapper", "backend_class", "candidates", "wrap"]
