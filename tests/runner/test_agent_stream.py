"""AgentStream over a pipe that dies: every way paramiko reports a dead transport is "unreachable".

paramiko's packetizer raises ``EOFError`` (not ``OSError``) when it writes to a closed socket, so
a host killed between two tasks surfaced as an internal error that stopped every host's run.
"""

from __future__ import annotations

import io

import pytest

from sandfleet.transports.base import AgentStream, HostUnreachable
from sandfleet_agent.portable.policy import BUILT_IN
from sandfleet_agent.portable.wire import ExecRequest


class Dead(io.RawIOBase):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def write(self, data: object) -> int:
        raise self.error

    def readline(self, size: int | None = -1) -> bytes:
        raise self.error


@pytest.mark.parametrize("error", [EOFError(), OSError("Socket is closed"), ValueError("I/O on closed file")])
def test_a_dead_transport_is_unreachable_not_a_crash(error: BaseException) -> None:
    request = ExecRequest(id="t", argv=("true",), sandbox=None, policy=BUILT_IN)
    writing = AgentStream("h1", Dead(error), io.BytesIO())  # type: ignore[arg-type]
    with pytest.raises(HostUnreachable, match="lost the agent on h1"):
        writing.execute(request)
    reading = AgentStream("h1", io.BytesIO(), Dead(error))  # type: ignore[arg-type]
    with pytest.raises(HostUnreachable, match="lost the agent on h1"):
        reading.execute(request)
