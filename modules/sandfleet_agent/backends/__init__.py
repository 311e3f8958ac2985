"""Choosing the sandbox for a task on this host.

Linux: bubblewrap; macOS: Seatbelt; Windows: its own backend. Landlock is never a silent
fallback: it cannot drop root's powers nor hide host processes, so it runs only where the operator
chose it (``sandfleet_sandbox: landlock``, or the operator policy's backend list). A pin is
honoured or refused, never silently replaced. A per-OS hint (``linux: {prefer: landlock}``) may
only reorder the backends the operator allows, and only when the operator lets hints choose.
When no candidate can enforce the policy the task fails closed with every candidate's reason and,
for an unpinned Linux host whose bwrap cannot run, the two ways out.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Optional

from sandfleet_agent.backends.base import Backend, ProxyEndpoint, Refused, Wrapper
from sandfleet_agent.binding.bind import BoundPolicy
from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.binding.hostfs import FsView
from sandfleet_agent.portable.intent import BACKENDS_BY_OS, NetworkMode

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


#: What an operator who chose nothing gets per OS: Landlock only by choice (see the module doc).
DEFAULT_BACKENDS: Mapping[str, tuple[str, ...]] = {os_name: names[:1] for os_name, names in BACKENDS_BY_OS.items()}
LANDLOCK_HOW = ("make bwrap work here, or let this host use Landlock (for an agent that runs as an unprivileged "
                "user): sandfleet_sandbox: landlock in the inventory, or linux_backends in sandfleet_policy")


def candidates(facts: HostFacts, pin: Optional[str], hints: Mapping[str, object],
               allowed: Optional[Sequence[str]] = None, hints_choose: bool = False) -> list[str]:
    """The backends to try, in order: the pin alone, else those ``allowed`` (the operator's
    list; the default otherwise), reordered by the ``prefer`` hint only when ``hints_choose``."""
    known = BACKENDS_BY_OS.get(facts.os, ())
    if pin:
        if pin not in known:
            raise Refused(f"sandfleet_sandbox={pin} cannot run on a {facts.os} host "
                          f"(allowed there: {', '.join(known) or 'none'})")
        return [pin]
    order = [b for b in (DEFAULT_BACKENDS.get(facts.os, ()) if allowed is None else allowed) if b in known]
    prefer = hints.get("prefer")
    if hints_choose and isinstance(prefer, str) and prefer in order:
        order.remove(prefer)
        order.insert(0, prefer)
    return order


def wrap(
    policy: BoundPolicy, argv: Sequence[str], facts: HostFacts, pin: Optional[str] = None,
    proxy: Optional[ProxyEndpoint] = None, allowed: Optional[Sequence[str]] = None, hints_choose: bool = False,
    fs: Optional[FsView] = None,
) -> Wrapper:
    """The wrapper of the first candidate that is available here and can enforce ``policy``."""
    reasons: list[str] = []
    order = candidates(facts, pin, policy.hints, allowed, hints_choose)
    for name in order:
        status = facts.backend(name)
        if status is None or not status.available:
            reasons.append(f"{name}: {status.reason if status else 'not probed on this host'}")
            continue
        try:
            return backend_class(name)(facts, proxy, fs).render(policy, argv)  # type: ignore[call-arg]
        except Refused as exc:
            reasons.append(f"{name}: {exc}")
        except ImportError:
            reasons.append(f"{name}: not supported by this version of sandfleet")
    pinned = f" (pinned by sandfleet_sandbox={pin})" if pin else ""
    how = ""
    if not pin and facts.os == "linux" and "landlock" not in order:
        managed = policy.network.mode is NetworkMode.MANAGED
        how = "; a managed network needs bwrap: make bwrap work here" if managed else f"; {LANDLOCK_HOW}"
    raise Refused(f"no sandbox can enforce this task's intent on this {facts.os} host{pinned}: "
                  + "; ".join(reasons or ["no sandbox exists for this OS"]) + how)


__all__ = ["Backend", "ProxyEndpoint", "Refused", "Wrapper", "backend_class", "candidates", "wrap"]
