"""Dry-run: the same host loop and the same host-side rendering, without touching any host.

Facts come from the inventory (:func:`assumed_facts`); a local-connection host is the controller
itself, so its facts are probed for real (read-only), which makes its dry-run wrapper exactly
the one a run executes. Nothing is spawned and no connection is opened.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Hashable
from typing import TYPE_CHECKING, Optional

from sandfleet.errors import InputError
from sandfleet.inventory import HostConfig
from sandfleet.transports.base import AgentInit, Connection
from sandfleet_agent.binding.facts import HostFacts, assumed_facts, probe
from sandfleet_agent.portable.intent import OS_NAMES
from sandfleet_agent.portable.limits import TaskLimits
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status, request_key

# The host side's rendering (executor, binding, backends, the sandbox pool) is imported by the
# methods that render: every run imports this module (the host loop checks for a dry-run), and
# a real run must not pay ~12 ms of its start for them.
if TYPE_CHECKING:
    from sandfleet_agent.backends.base import Wrapper
    from sandfleet_agent.binding.bind import FsView


class DryConnection(Connection):
    def __init__(self, config: HostConfig) -> None:
        from sandfleet_agent.binding.bind import AssumedFs, LocalFs
        from sandfleet_agent.linux.sandbox_pool import KeyUses

        self.host, self.config = config.name, config
        self.facts: Optional[HostFacts] = None
        self.fs: FsView = LocalFs() if config.connection == "local" else AssumedFs(config.os or "linux")
        #: The interpreter a persistent sandbox's init runs with: the agent's own. A local agent is
        #: this very interpreter; over SSH it is ``sandfleet_python`` as the inventory names it (the
        #: run reports the path it resolved to).
        self.python: tuple[str, ...] = (sys.executable,) if config.connection == "local" else _words(config.python)
        self.uses = KeyUses()  # which task of a policy starts its persistent sandbox, as the agent counts

    def start(self, init: AgentInit) -> HostFacts:
        if self.config.connection == "local":
            from sandfleet.transports.local import own_installation

            self.facts = probe(init.workspace_roots, own_installation())
        elif self.config.os is None:
            raise InputError(f"host {self.host!r} has no sandfleet_os; a dry-run renders that host's sandbox "
                             "from it, so it is required", allowed=OS_NAMES)
        else:
            self.facts = assumed_facts(self.config.os, self.config.user, init.workspace_roots,
                                       self.config.home, self.config.tmpdir)
        return self.facts

    def execute(self, request: ExecRequest) -> ExecResult:
        """What the host would answer, without running anything: the wrapper it would run, in the
        result as a real run reports it, stamped with the policy it checked (the operator's layers:
        a dry-run cannot read a remote host owner's own file)."""
        assert self.facts is not None, "start() first"
        result = self._render(request, self.facts)
        return dataclasses.replace(result, policy_sources=request.policy.sources, policy_digest=request.policy.digest())

    def _render(self, request: ExecRequest, facts: HostFacts) -> ExecResult:
        from sandfleet_agent.executor import Prepared, prepare
        from sandfleet_agent.linux.sandbox_pool import persistent_wrapper, reusable, split_wrapper

        key = _render_key(self, request)
        cached = _rendered.get(key) if key is not None else None
        if cached is not None:
            wrapper, warnings, limits = cached
        else:
            prepared = prepare(request, facts, self.fs, self.config.sandbox_pin)
            if not isinstance(prepared, Prepared):
                return prepared  # refusals name the request: not cached
            wrapper, warnings, limits = prepared.wrapper, prepared.warnings, prepared.limits
            if key is not None:
                if len(_rendered) >= _RENDERED_MAX:  # tasks that differ on every host: keep memory flat
                    _rendered.clear()
                _rendered[key] = (wrapper, warnings, limits)
        if self.config.sandbox_reuse and reusable(request):
            sandbox = split_wrapper(wrapper, request.argv)
            if sandbox is not None and self.uses.promote(sandbox):
                wrapper = persistent_wrapper(wrapper, request.argv, self.python, request.timeout_s) or wrapper
        return ExecResult(id=request.id, status=Status.OK, backend=wrapper.backend, wrapper=wrapper.argv,
                          wrapper_files=dict(wrapper.files), message="dry-run: not executed", warnings=warnings,
                          limits=limits.to_json(), limits_mechanism=facts.limits or None)


def _words(python: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(python)) or ("python3",)
    except ValueError:
        return (python,)


#: Wrappers already rendered for remote hosts, by everything the rendering reads. Why: a fleet is
#: mostly hosts the inventory describes alike, and a dry-run renders the same task for each of
#: them (1,000 hosts x 10 tasks took 4.8 s, most of it rendering the same wrappers again). Only
#: hosts whose filesystem is assumed are cached: their rendering is a pure function of this key.
#: A local host's rendering reads the real filesystem (does .git exist?), so it is never cached.
_rendered: dict[Hashable, tuple[Wrapper, tuple[str, ...], TaskLimits]] = {}
_RENDERED_MAX = 4096


def _render_key(connection: DryConnection, request: ExecRequest) -> Optional[Hashable]:
    from sandfleet_agent.binding.bind import AssumedFs

    if not isinstance(connection.fs, AssumedFs):
        return None
    return request_key(request), request.warnings, connection.facts, connection.config.sandbox_pin
