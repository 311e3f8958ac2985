"""``ansible_connection: local``: the same agent, started as a subprocess of the controller."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from typing import IO, Optional

from sandfleet.modules import wire
from sandfleet.modules.facts import HostFacts
from sandfleet.runner.base import AgentInit, AgentStream, Connection, HostUnreachable


class LocalConnection(Connection):
    def __init__(self, host: str, python: Optional[str] = None) -> None:
        self.host = host
        self.python = python or sys.executable
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._stream: Optional[AgentStream] = None
        self._stderr: Optional[IO[bytes]] = None

    def start(self, init: AgentInit) -> HostFacts:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the agent
        try:
            # Its own session: a Ctrl-C at the terminal reaches only the controller, which then
            # closes the agent's stdin; the agent kills the running task and exits (as over SSH).
            self._proc = subprocess.Popen([self.python, "-m", "sandfleet.modules.agent"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=True)
        except OSError as exc:
            raise HostUnreachable(f"cannot start the local agent with {self.python}: {exc.strerror}") from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stream = AgentStream(self.host, self._proc.stdin, self._proc.stdout)
        try:
            return self._stream.handshake(init)
        except HostUnreachable as exc:
            raise HostUnreachable(f"{exc}{self._agent_stderr()}") from None

    def execute(self, request: wire.ExecRequest) -> wire.ExecResult:
        if self._stream is None:
            raise HostUnreachable(f"{self.host}: not started")
        try:
            return self._stream.execute(request)
        except HostUnreachable as exc:
            raise HostUnreachable(f"{exc}{self._agent_stderr()}") from None

    def _agent_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        return f": {tail.splitlines()[-1]}" if tail else ""

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            assert proc.stdin is not None
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
