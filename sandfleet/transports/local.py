"""``ansible_connection: local``: the same agent, started as a subprocess of the controller.

The agent gets a minimal environment (:func:`agent_env`): the controller's may hold secrets
(``AWS_SECRET_ACCESS_KEY``, ``SSH_AUTH_SOCK``, tokens), and a process's environment is readable
by others of its user. It is also told the controller's own installation (:func:`own_installation`),
which no task may write: the next ``sandfleet`` command runs that code unsandboxed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from typing import IO, Optional

import sandfleet
import sandfleet_agent
from sandfleet.transports.base import AgentInit, AgentStream, HostUnreachable, StreamConnection, last_words
from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.portable import wire
from sandfleet_agent.spawn import INHERITED_ENV

#: What a local agent keeps of the controller's environment beyond the variables every task
#: inherits: where its cache lives, the Python path it may have been started with, and
#: sandfleet's own settings. Nothing else (credentials, agent sockets, tokens) reaches it.
AGENT_ENV = ("XDG_CACHE_HOME", "PYTHONPATH")


def agent_env(environ: Optional[Mapping[str, str]] = None, passthrough: Sequence[str] = ()) -> dict[str, str]:
    """``passthrough``: the names the operator's policy lets tasks inherit (``env_passthrough``);
    the agent needs them to pass them on (later layers may still narrow the list)."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items()
            if k in INHERITED_ENV or k in AGENT_ENV or k in passthrough or k.startswith(("LC_", "SANDFLEET_"))}


def own_installation() -> tuple[str, ...]:
    """Where the controller runs from: its packages, its interpreter's prefixes and scripts."""
    paths = [os.path.dirname(os.path.abspath(sandfleet.__file__)), *map(os.path.abspath, sandfleet_agent.__path__),
             sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable or "/"))]
    paths += [sysconfig.get_paths()[key] for key in ("purelib", "platlib", "scripts")]
    if sys.argv and sys.argv[0] and os.path.isabs(sys.argv[0]):
        paths.append(os.path.dirname(os.path.realpath(sys.argv[0])))
    return tuple(dict.fromkeys(os.path.realpath(p) for p in paths if p))


class LocalConnection(StreamConnection):
    def __init__(self, host: str, python: Optional[str] = None, passthrough: Sequence[str] = ()) -> None:
        self.host, self.passthrough = host, tuple(passthrough)
        self.python = python or sys.executable
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._stream: Optional[AgentStream] = None
        self._stderr: Optional[IO[bytes]] = None

    def start(self, init: AgentInit) -> HostFacts:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the agent
        init = dataclasses.replace(init, protect=(*init.protect, *own_installation()))
        try:
            # Its own session: a Ctrl-C at the terminal reaches only the controller, which then
            # closes the agent's stdin; the agent kills the running task and exits (as over SSH).
            self._proc = subprocess.Popen([self.python, "-m", "sandfleet_agent.agent"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=True,
                                          env=agent_env(passthrough=self.passthrough))
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
        return last_words(self._stderr.read())

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
