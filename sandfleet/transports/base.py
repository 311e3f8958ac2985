"""The transport seam: "a connection that can run the agent on one host" (docs/architecture.md §8).

The scheduler only ever talks to a :class:`Connection`; the local subprocess and SSH implement
it, and tests of the logic above may use a fake. :class:`AgentStream` is the JSON-lines protocol
spoken over whatever pipe a connection provides.
"""

from __future__ import annotations

import json
import sys
import threading
from abc import ABC, abstractmethod
from typing import IO, Any

from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.portable import wire
from sandfleet_agent.portable.wire import AgentInit as AgentInit  # the seam takes the wire's init line


class HostUnreachable(Exception):
    """The host cannot be reached or its agent went away; its remaining tasks cannot run."""


def last_words(stderr: bytes) -> str:
    """``": <last line>"`` of what an agent wrote to stderr, for the message that says why it went
    away (a traceback's last line is the exception); ``""`` when it wrote nothing."""
    text = stderr[-2000:].decode("utf-8", "replace").strip()
    return f": {text.splitlines()[-1]}" if text else ""


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
        except (OSError, ValueError, EOFError) as exc:  # paramiko raises EOFError on a dead transport
            raise HostUnreachable(f"lost the agent on {self.host}: {exc}") from None

    def _receive_line(self) -> bytes:
        try:
            line = self._reader.readline()
        except (OSError, ValueError, EOFError) as exc:  # paramiko raises EOFError on a dead transport
            raise HostUnreachable(f"lost the agent on {self.host}: {exc}") from None
        if not line:
            raise HostUnreachable(f"the agent on {self.host} exited")
        return line

    def _receive(self) -> Any:
        line = self._receive_line()
        try:
            return json.loads(line)
        except ValueError:
            raise HostUnreachable(f"the agent on {self.host} sent garbage: {line[:200]!r}") from None

    @staticmethod
    def init_line(init: AgentInit) -> bytes:
        """The bytes :meth:`send_init` sends (the SSH stub is told their length ahead)."""
        return wire.encode_init(init).encode("ascii") + b"\n"

    def handshake(self, init: AgentInit) -> HostFacts:
        with self._lock:
            self.send_init(init)
            return self.receive_hello()

    def send_init(self, init: AgentInit) -> None:
        """The first half of :meth:`handshake`: a connection may send the init line early (before
        the agent has started) and read the hello later, so that no round trip waits for it."""
        self._send(wire.encode_init(init))

    def receive_hello(self) -> HostFacts:
        """The second half of :meth:`handshake`: the agent's hello (or why it did not start)."""
        line = self._receive_line()
        try:
            hello = wire.decode_hello(line)
        except wire.WireError as exc:
            raise HostUnreachable(f"the agent on {self.host} did not start: {exc}") from None
        for warning in hello.warnings:  # no channel from a connection to the report: stderr, as bootstrap's
            sys.stderr.write(f"sandfleet: warning: {self.host}: {warning}\n")
        return HostFacts.from_dict(hello.facts)

    def execute(self, request: wire.ExecRequest) -> wire.ExecResult:
        with self._lock:
            self._send(wire.encode_request(request))
            reply = self._receive()
        try:
            return wire.result_from_json(reply)  # already parsed: no second JSON round trip
        except wire.WireError as exc:
            raise HostUnreachable(f"the agent on {self.host} sent a bad result: {exc}") from None
