"""``ansible_connection: ssh``: the same agent as the local connection, on a host over paramiko.

One TCP connection (``TCP_NODELAY`` on: without it every task round trip waits ~40 ms for
Nagle) and one session channel per host for the whole run. The channel runs the bootstrap
command (:mod:`.bootstrap`), which uploads the agent zip only when the host lacks it, then the
agent speaks :class:`AgentStream` JSON lines. Host keys are checked (:mod:`.hostkeys`) before a
single credential is sent, on every hop of a ``ProxyJump`` chain, which is built from
``direct-tcpip`` channels as paramiko leaves that to its callers (:mod:`.sshconfig`).

Anything that stops a host (refused, timed out, unknown key, no usable key, no Python, lost
mid-run) is a :class:`HostUnreachable` with a message that says what to do; the scheduler keeps
the results the host already produced and carries on with the others.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, Callable, Optional, Union

from sandfleet.errors import UsageError
from sandfleet.inventory import HostConfig
from sandfleet.transports import stamps
from sandfleet.transports._lean import paramiko
from sandfleet.transports.base import AgentInit, AgentStream, HostUnreachable, StreamConnection, last_words
from sandfleet.transports.bootstrap import (
    INLINE_INIT,
    MIN_PYTHON,
    STOP_STATES,
    AgentBundle,
    agent_bundle,
    parse_reply,
)
from sandfleet.transports.hostkeys import POLICIES, REJECT, HostKeyPolicy, KnownHosts, host_id
from sandfleet.transports.sshconfig import DEFAULT_IDENTITIES, Endpoint, Route, SshConfig
from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.portable import wire

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

BUFFER = 1 << 16
NOT_FOUND = (126, 127)  # the shell's "cannot execute" and "not found"
_RSA_ALGORITHMS = ["rsa-sha2-512", "rsa-sha2-256"]
Sock = Union[socket.socket, paramiko.Channel]


class _ChannelReader(io.RawIOBase):
    """The channel's stdout as a raw stream, so :class:`io.BufferedReader` reads it in big chunks."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._channel.recv(len(view))
        view[:len(data)] = data
        return len(data)


class _ChannelWriter(io.RawIOBase):
    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        chunk = bytes(data)
        self._channel.sendall(chunk)
        return len(chunk)


class SshConnector:
    """What the SSH connections of one run share: the policy, ssh_config, known_hosts and keys.

    Called with a :class:`HostConfig`, it returns that host's (not yet started) connection.
    """

    def __init__(self, host_key_policy: HostKeyPolicy = REJECT, ssh_config: Optional[str] = None,
                 bundle: Callable[[], AgentBundle] = agent_bundle) -> None:
        if host_key_policy not in POLICIES:
            raise UsageError(f"unknown host key policy {host_key_policy!r} (allowed: {', '.join(POLICIES)})")
        self.policy = host_key_policy
        self.config = SshConfig.load(ssh_config)
        self.bundle = bundle
        self._known: dict[tuple[Any, ...], KnownHosts] = {}
        self._keys: dict[str, Union[paramiko.PKey, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, config: HostConfig) -> SshConnection:
        return SshConnection(config, self)

    def known_hosts(self, endpoint: Endpoint) -> KnownHosts:
        files = endpoint.known_hosts + endpoint.global_known_hosts
        if not endpoint.known_hosts:
            raise HostUnreachable(f"UserKnownHostsFile is none for {endpoint.alias}: there is nowhere to check "
                                  "its host key")
        key = (files, endpoint.hash_known_hosts)
        with self._lock:
            if key not in self._known:
                self._known[key] = KnownHosts(files, endpoint.known_hosts[0], hash_names=endpoint.hash_known_hosts)
            return self._known[key]

    def private_key(self, path: str) -> Union[paramiko.PKey, str]:
        """The key in ``path``, or why it cannot be used; each file is read once per run."""
        with self._lock:
            if path not in self._keys:
                self._keys[path] = _load_key(path)
            return self._keys[path]


def _load_key(path: str) -> Union[paramiko.PKey, str]:
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        return "no such file"
    except paramiko.PasswordRequiredException:
        return "encrypted: load it into ssh-agent"
    except (paramiko.SSHException, OSError, ValueError) as exc:
        return f"unreadable: {exc}"


class SshConnection(StreamConnection):
    def __init__(self, config: HostConfig, connector: SshConnector) -> None:
        self.host, self.config, self.connector = config.name, config, connector
        self.uploaded: Optional[bool] = None  # after start: whether the host needed the agent zip
        self.remote_python: Optional[str] = None  # after start: the agent's Python version
        self.resident: Optional[bool] = None  # after start: whether a resident agent serves this run
        self._transports: list[paramiko.Transport] = []
        self._channel: Optional[paramiko.Channel] = None
        self._stream: Optional[AgentStream] = None
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=16)

    # --- start ------------------------------------------------------------------------------

    def start(self, init: AgentInit) -> HostFacts:
        with self._reaching():
            route = self.connector.config.route(self.config)
            self._open(route)
            return self._start_agent(init, route.target)

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Reaching the host: on any failure the connection is closed, and an SSH or socket error
        becomes :class:`HostUnreachable` saying what went wrong."""
        try:
            yield
        except HostUnreachable:
            self.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise HostUnreachable(f"{self.host}: {_describe(exc)}") from None

    def _become_prompt(self) -> Optional[str]:
        """sudo's prompt for this connection when it has a become password to answer it with."""
        return _become_prompt() if self.config.become_user and self.config.become_password is not None else None

    def _open(self, route: Route) -> None:
        hops = [*route.jumps, route.target]
        for index, endpoint in enumerate(hops):
            if index == 0:
                sock: Sock = self._tcp(endpoint)
            else:
                via = hops[index - 1]
                try:
                    sock = self._transports[-1].open_channel("direct-tcpip", (endpoint.hostname, endpoint.port),
                                                             ("127.0.0.1", 0), timeout=endpoint.timeout)
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    raise HostUnreachable(f"jump host {via} could not reach {endpoint.hostname}:{endpoint.port} "
                                          f"for {self.host}: {_describe(exc)}") from None
            try:
                self._handshake(endpoint, sock, via=hops[index - 1] if index else None)
            except HostUnreachable as exc:
                if endpoint is route.target:
                    raise
                raise type(exc)(f"jump host {endpoint.alias} (for {self.host}): {exc}") from None

    def _tcp(self, endpoint: Endpoint) -> socket.socket:
        where = f"{self.host} at {endpoint.hostname}:{endpoint.port}"
        try:
            sock = socket.create_connection((endpoint.hostname, endpoint.port), timeout=endpoint.timeout)
        except socket.timeout:
            raise HostUnreachable(f"cannot reach {where}: no answer within {endpoint.timeout:g} s "
                                  "(ansible_timeout / ConnectTimeout)") from None
        except OSError as exc:
            raise HostUnreachable(f"cannot reach {where}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _handshake(self, endpoint: Endpoint, sock: Sock, via: Optional[Endpoint]) -> None:
        transport = paramiko.Transport(sock)
        self._transports.append(transport)  # closed by close() whatever happens next
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = endpoint.timeout
        known = self.connector.known_hosts(endpoint)
        name = host_id(endpoint.hostname, endpoint.port)
        recorded = known.preferred_types(name)
        if recorded:  # ask for a key type we can check, as OpenSSH does
            wanted = [a for t in recorded for a in (_RSA_ALGORITHMS if t == "ssh-rsa" else [t])]
            options = transport.get_security_options()
            options.key_types = [*[t for t in wanted if t in options.key_types],
                                 *[t for t in options.key_types if t not in wanted]]
        hop = f" (through {via})" if via else ""
        try:
            transport.start_client(timeout=endpoint.timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(f"SSH handshake with {self.host} at {endpoint}{hop} failed: {_describe(exc)}") \
                from None
        key = transport.get_remote_server_key()
        keyscan = f"ssh-keyscan {'' if endpoint.port == 22 else f'-p {endpoint.port} '}{endpoint.hostname}"
        policy = REJECT if endpoint.strict else self.connector.policy
        known.verify(name, key.get_name(), key.asbytes(), policy, keyscan=keyscan)
        self._authenticate(transport, endpoint)
        transport.set_keepalive(endpoint.keepalive)

    def _authenticate(self, transport: paramiko.Transport, endpoint: Endpoint) -> None:
        tried: list[str] = []
        use_agent = not endpoint.identities_only and bool(os.environ.get("SSH_AUTH_SOCK"))
        agent = paramiko.Agent() if use_agent else None
        try:
            for label, key in self._candidate_keys(endpoint, agent, tried):
                if self._try_key(transport, endpoint, label, key, tried):
                    return
        finally:
            if agent is not None:
                agent.close()
        listed = "; ".join(tried) or "none found"
        raise HostUnreachable(f"{endpoint} accepted none of the keys tried ({listed}); set "
                              "ansible_ssh_private_key_file or IdentityFile, or add the key to ssh-agent")

    def _candidate_keys(self, endpoint: Endpoint, agent: Optional[paramiko.Agent],
                        tried: list[str]) -> Iterator[tuple[str, paramiko.PKey]]:
        """Keys in OpenSSH's order: explicit files, ssh-agent's keys, then the default files."""
        defaults = [] if endpoint.identity_files else [os.path.expanduser(p) for p in DEFAULT_IDENTITIES]
        files = [*endpoint.identity_files, *(p for p in defaults if os.path.exists(p))]
        for path in files[:len(endpoint.identity_files)]:
            yield from self._file_key(path, tried)
        if agent is not None:
            for agent_key in agent.get_keys():
                yield f"ssh-agent key {agent_key.fingerprint}", agent_key
        for path in files[len(endpoint.identity_files):]:
            yield from self._file_key(path, tried)

    def _file_key(self, path: str, tried: list[str]) -> Iterator[tuple[str, paramiko.PKey]]:
        key = self.connector.private_key(path)
        if isinstance(key, str):
            tried.append(f"{path} ({key})")
        else:
            yield path, key

    def _try_key(self, transport: paramiko.Transport, endpoint: Endpoint, label: str, key: paramiko.PKey,
                 tried: list[str]) -> bool:
        try:
            remaining = transport.auth_publickey(endpoint.user, key)
        except paramiko.BadAuthenticationType as exc:
            raise HostUnreachable(f"{endpoint} does not accept public keys (it allows: "
                                  f"{', '.join(exc.allowed_types)})") from None
        except paramiko.AuthenticationException:
            tried.append(label)
            return False
        if transport.is_authenticated():
            return True
        raise HostUnreachable(f"{endpoint} wants more than a key after {label} ({', '.join(remaining)}), "
                              "which sandfleet cannot provide")

    def _start_agent(self, init: AgentInit, target: Endpoint) -> HostFacts:
        """Open the session, run the stub, read its reply and the agent's hello. Round trips: the
        session's open (its channel number is needed for anything else), then ONE for the exec
        request, the stub's reply and the agent's hello, as the init line travels in the command
        (base64, :data:`INLINE_INIT`) and the exec's reply is not waited for
        (:func:`_exec_pipelined`). Sent on stdin instead, the init line would cost a round trip
        more: OpenSSH opens a session channel with no window, granted only once the command runs.
        An upload adds one (``upload``, then the zip); so does an init line too big to inline.
        """
        bundle = self.connector.bundle()
        channel = self._transports[-1].open_session(timeout=target.timeout)
        self._channel = channel
        channel.settimeout(max(30.0, 3 * target.timeout))  # start-up only; tasks then take what they take
        reader = io.BufferedReader(_ChannelReader(channel), BUFFER)
        writer = io.BufferedWriter(_ChannelWriter(channel), BUFFER)
        stream = AgentStream(self.host, writer, reader)
        line = stream.init_line(init)
        inline = len(line) <= INLINE_INIT
        prompt = self._become_prompt()
        copy = self._copy_key(target, bundle)
        known = stamps.remembered(copy)
        _exec_pipelined(channel, bundle.command(self.config.python, init=line if inline else None,
                                                become_user=self.config.become_user, become_prompt=prompt,
                                                persist_s=self.config.agent_persist_s, stamp=known))
        try:
            if prompt is not None:
                self._answer_sudo(channel, writer, prompt, target.timeout)
            stamp = self._bootstrap(channel, reader, writer, bundle)
            if stamp is not None and stamp != known:
                stamps.remember(copy, stamp)
            if not inline:
                stream.send_init(init)
            facts = stream.receive_hello()
        except socket.timeout:
            raise HostUnreachable(f"the agent on {self.host} did not answer within {channel.gettimeout():g} s"
                                  f"{self._stderr_tail()}") from None
        except HostUnreachable as exc:
            raise HostUnreachable(f"{exc}{self._stderr_tail()}") from None
        channel.settimeout(None)
        self._stream = stream
        return facts

    def _copy_key(self, target: Endpoint, bundle: AgentBundle) -> str:
        """Names the agent's copy this start reaches, for its stamp (:mod:`.stamps`): the host by
        its verified key, the login and become users, the interpreter and the bundle."""
        key = self._transports[-1].get_remote_server_key()
        return (f"{key.get_name()} {key.get_fingerprint().hex()} {target} {self.config.become_user or '-'} "
                f"{self.config.python} {bundle.sha256}")

    def _answer_sudo(self, channel: paramiko.Channel, writer: IO[bytes], prompt: str, timeout: float) -> None:
        """Give sudo the become password when it asks with our prompt on stderr, at most once:
        sudo that needs none runs the stub at once (its first line on stdout ends the wait), and a
        second prompt means the password was wrong. The password goes to stdin only: never on a
        command line (``ps``), in an event or in a message."""
        wanted, seen, answered = prompt.encode(), b"", False
        deadline = time.monotonic() + max(30.0, 3 * timeout)
        while not channel.recv_ready():
            if channel.recv_stderr_ready():
                seen += channel.recv_stderr(BUFFER)
                if wanted in seen:
                    if answered:
                        channel.close()
                        raise HostUnreachable(
                            f"sudo on {self.host} refused the become password for {self.config.become_user} "
                            "(ansible_become_password or --ask-become-pass): check it, or give the login user "
                            "a NOPASSWD sudoers rule")
                    assert self.config.become_password is not None
                    writer.write(self.config.become_password.encode() + b"\n")
                    writer.flush()
                    answered, seen = True, seen.split(wanted, 1)[1]
                continue
            if channel.exit_status_ready() or channel.closed or time.monotonic() > deadline:
                break  # what went wrong is for _bootstrap to say, with sudo's stderr
            time.sleep(0.002)
        if seen:
            self._stderr.append(seen)  # sudo's own words ("Sorry, try again."), for the error's tail

    def _bootstrap(self, channel: paramiko.Channel, reader: IO[bytes], writer: IO[bytes],
                   bundle: AgentBundle) -> Optional[str]:
        """Answer the stub until it says ``ready``; returns the stamp it reported (None: none)."""
        python = self.config.python
        wanted = f"python3 >= {'.'.join(map(str, MIN_PYTHON))}"
        uploaded = False
        for _ in range(200):  # skip what a chatty login shell prints before the stub speaks
            line = reader.readline(BUFFER)
            if not line:
                status = channel.recv_exit_status() if channel.status_event.wait(5) else -1
                become = self.config.become_user
                if become is not None and status != -1:  # sudo's own failures: 1, or 126/127 for no sudo
                    login = f" ({self.config.user})" if self.config.user else ""
                    why = (f"allow the login user{login} to run {python} as {become} (sudoers)"
                           if self.config.become_password is not None else
                           f"sandfleet runs sudo -n, which never asks for a password: give it one (--ask-become-pass "
                           f"or ansible_become_password) or allow the login user{login} to run {python} as {become} "
                           "without one (a NOPASSWD sudoers rule)")
                    raise HostUnreachable(
                        f"sudo could not start the agent on {self.host} as {become} (ansible_become, status {status}): "
                        f"{why}, and check that sudo and {python} are installed there")
                if status in NOT_FOUND:
                    raise HostUnreachable(f"{wanted} not found on {self.host}: {python!r} cannot be run "
                                          "(set sandfleet_python)")
                if status == -1 and channel.closed:  # no exit status: nothing ran (e.g. exec refused)
                    raise HostUnreachable(f"the agent on {self.host} exited before starting (status unknown: "
                                          "the SSH server ended the session without one; was the command refused?)")
                raise HostUnreachable(f"the agent on {self.host} exited before starting (status {status})")
            reply = parse_reply(line)
            if reply is None:
                continue
            if reply.kind == "upload":
                writer.write(bundle.data)
                writer.flush()
                uploaded = True
            elif reply.kind == "ready" and len(reply.words) >= 2:
                self.uploaded, self.remote_python = uploaded, reply.words[1]  # a repair may upload too
                self.resident = reply.words[0] == "resident"
                warning = reply.warning(self.host)
                if warning:  # no channel from a connection to the report: stderr, as the CLI's own warnings
                    sys.stderr.write(f"sandfleet: warning: {warning}\n")
                return reply.words[2] if len(reply.words) > 2 and stamps.valid(reply.words[2]) else None
            elif reply.kind == "too-old":
                version = reply.words[0] if reply.words else "?"
                raise HostUnreachable(f"{wanted} not found on {self.host}: {python!r} is Python {version} "
                                      "(set sandfleet_python)")
            else:
                raise HostUnreachable(f"the agent upload to {self.host} failed ({reply.kind})")
        raise HostUnreachable(f"{self.host} printed too much before the agent started (a login script?)")

    # --- the resident agent -----------------------------------------------------------------

    def stop_residents(self) -> list[tuple[str, str]]:
        """``sandfleet agent stop``: ask every resident agent of this host's user (the become
        user's, with become) to exit, whatever its version (docs/resident-agent.md). One
        ``(state, name)`` per resident found: ``stopped``, ``refused``, ``gone`` (it had died; what
        it left is removed) or ``busy``. Runs it serves finish; the connection is closed after."""
        with self._reaching():
            route = self.connector.config.route(self.config)
            self._open(route)
            channel = self._channel = self._transports[-1].open_session(timeout=route.target.timeout)
            channel.settimeout(max(30.0, 3 * route.target.timeout))
            writer = io.BufferedWriter(_ChannelWriter(channel), BUFFER)
            prompt = self._become_prompt()
            channel.exec_command(self.connector.bundle().stop_command(self.config.python, self.config.become_user,
                                                                      prompt))
            if prompt is not None:
                self._answer_sudo(channel, writer, prompt, route.target.timeout)
            replies = [r for r in map(parse_reply, io.BufferedReader(_ChannelReader(channel), BUFFER)) if r]
            status = channel.recv_exit_status()
        tail = self._stderr_tail()
        self.close()
        if status != 0 or any(r.kind == "too-old" for r in replies):
            raise HostUnreachable(f"could not ask the resident agents on {self.host} to stop (status {status})"
                                  f"{tail}")
        return [(r.kind, r.words[0]) for r in replies if r.kind in STOP_STATES and r.words]

    # --- run --------------------------------------------------------------------------------

    def execute(self, request: wire.ExecRequest) -> wire.ExecResult:
        if self._stream is None or self._channel is None:
            raise HostUnreachable(f"{self.host}: not started")
        try:
            result = self._stream.execute(request)
        except HostUnreachable as exc:
            if not self._transports or not self._transports[-1].is_active():
                raise HostUnreachable(f"lost the SSH connection to {self.host} during task {request.id!r}; "
                                      "its later tasks did not run") from None
            raise HostUnreachable(f"{exc}{self._stderr_tail()}") from None
        self._drain_stderr()
        return result

    def _drain_stderr(self) -> None:
        """Keep the agent's stderr moving (unread, it would fill the channel window) and its tail."""
        channel = self._channel
        while channel is not None and channel.recv_stderr_ready():
            self._stderr.append(channel.recv_stderr(BUFFER))

    def _stderr_tail(self) -> str:
        self._drain_stderr()
        return last_words(b"".join(self._stderr))

    # --- close ------------------------------------------------------------------------------

    def close(self) -> None:
        """EOF to the agent (it exits after its current task), then drop the channel and the hops."""
        channel, self._channel, self._stream = self._channel, None, None
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.shutdown_write()
            with contextlib.suppress(Exception):
                channel.close()
        transports, self._transports = self._transports, []
        for transport in reversed(transports):
            with contextlib.suppress(Exception):
                transport.close()


def _become_prompt() -> str:
    """A prompt no program prints by chance, so sudo's question is told from other stderr."""
    return f"[sandfleet-become:{secrets.token_hex(8)}] password: "


def _exec_pipelined(channel: paramiko.Channel, command: str) -> None:
    """``channel.exec_command(command)`` without waiting for the server's reply: one round trip
    less per host. The request still asks for a reply, so a refusal closes the channel (paramiko's
    ``_request_failed``), which the stub's missing first line then reports; what is sent after
    it reaches the command's stdin, as the server handles a channel's messages in order. Falls
    back to the waiting call on a paramiko without the internals used here."""
    send = getattr(channel.transport, "_send_user_message", None)
    if send is None or not hasattr(paramiko, "Message") or channel.closed or not channel.active:
        channel.exec_command(command)
        return
    message = paramiko.Message()
    message.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string("exec")
    message.add_boolean(True)
    message.add_string(command)
    send(message)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
