"""The transport seam: "a connection that can run the agent on one host" (docs/architecture.md §8).

The scheduler only ever talks to a :class:`Connection`; the local subprocess and SSH implement
it, and tests of the logic above may use a fake. :class:`AgentStream` is the JSON-lines protocol
spoken over whatever pipe a connection provides.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import IO, Any, Optional

from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.portable import wire


class HostUnreachable(Exception):
    """The host cannot be reached or its agent went away; its remaining tasks cannot run."""


@dataclass(frozen=True)
class AgentInit:
    """What the agent needs from the inventory before its first task; ``network_resolve`` is the
    operator's name → address map for managed-network proxies (``sandfleet_network_resolve``)."""

    workspace_roots: tuple[str, ...] = ()
    sandbox_pin: Optional[str] = None
    network_resolve: tuple[tuple[str, str], ...] = ()
    #: One persistent sandbox per sandbox command on the host, or a fresh one per task
    #: (``sandfleet_sandbox_reuse``); agents that predate it ignore it and start fresh ones.
    sandbox_reuse: bool = True
    #: More paths no task may write, on top of what the agent protects itself (its code, its
    #: interpreter, its PATH): a local agent is given the controller's own installation.
    protect: tuple[str, ...] = ()

    def line(self) -> str:
        return json.dumps({"v": 1, "init": {"workspace_roots": list(self.workspace_roots),
                                             "sandbox_pin": self.sandbox_pin,
                                             "network_resolve": dict(self.network_resolve),
                                             "sandbox_reuse": self.sandbox_reuse,
                                             "protect": list(self.protect)}}, ensure_ascii=True)


class Connection(ABC):
    host: str

    @abstractmethod
    def start(self, init: AgentInit) -> HostFacts:
        """Reach the host and start its agent; returns the facts the agent probed."""

    @abstractmethod
    def execute(self, request: wire.ExecRequest) -> wire.ExecResult:
        """Run one task on the host's agent. Raises :class:`HostUnreachable` if it is gone."""

    def close(self) -> None:  # noqa: B027 - optional for connections with nothing to release
        """Release the host; safe to call more than once."""


class AgentStream:
    """Requests and results as JSON lines over a byte pipe pair (one agent, one task at a time)."""

    def __init__(self, host: str, writer: IO[bytes], reader: IO[bytes]) -> None:
        self.host, self._writer, self._reader = host, writer, reader
        self._lock = threading.Lock()

    def _send(self, line: str) -> None:
        try:
            self._writer.write(line.encode("ascii") + b"\n")
            self._writer.flush()
        except (OSError, ValueError) as exc:
            raise HostUnreachable(f"lost the agent on {self.host}: {exc}") from None

    def _receive(self) -> Any:
        try:
            line = self._reader.readline()
        except (OSError, ValueError) as exc:
            raise HostUnreachable(f"lost the agent on {self.host}: {exc}") from None
        if not line:
            raise HostUnreachable(f"the agent on {self.host} exited")
        try:
            return json.loads(line)
        except ValueError:
            raise HostUnreachable(f"the agent on {self.host} sent garbage: {line[:200]!r}") from None

    def handshake(self, init: AgentInit) -> HostFacts:
        with self._lock:
            self._send(init.line())
            reply = self._receive()
        if not isinstance(reply, dict) or "hello" not in reply:
            detail = reply.get("error") if isinstance(reply, dict) else reply
            raise HostUnreachable(f"the agent on {self.host} did not start: {detail}")
        return HostFacts.from_dict(reply["hello"]["facts"])

    def execute(self, request: wire.ExecRequest) -> wire.ExecResult:
        with self._lock:
            self._send(wire.encode_request(request))
            reply = self._receive()
        try:
            return wire.result_from_json(reply)  # already parsed: no second JSON round trip
        except wire.WireError as exc:
            raise HostUnreachable(f"the agent on {self.host} sent a bad result: {exc}") from None
