"""The transport seam: "a connection that can run the agent on one host" (docs/architecture.md §8).

The scheduler only ever talks to a :class:`Connection`; the local subprocess and SSH implement
it, and tests of the logic above may use a fake. :class:`AgentStream` is the JSON-lines protocol
spoken over whatever pipe a connection provides.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Optional, Union

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

    @property
    def pipelines(self) -> bool:
        """Whether :meth:`pipeline` can send batches here (a started agent that understands them)."""
        return False

    def pipeline(self, steps: Sequence[wire.BatchStep]) -> bool:
        """Send these tasks' requests ahead, in one batch: the :meth:`execute` of each, in order,
        then only reads its result. False when this connection cannot (each then goes alone)."""
        return False

    def received(self) -> Optional[list[Reply]]:
        """The replies of the batch in flight that came in but were not asked for yet, oldest
        first, without taking them: what an interrupt reports as already run
        (``HostRun.cancel``). None: no batch is in flight (none sent, or its end line was read)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional for connections with nothing to release
        """Release the host; safe to call more than once."""


#: What an agent answers in a batch: a result, or the line that ends the batch.
Reply = Union[wire.ExecResult, wire.BatchEnd]


class StreamConnection(Connection):
    """A connection whose agent speaks :class:`AgentStream` (local and SSH): pipelining and what
    an interrupt reads go to the stream once the agent has started."""

    _stream: Optional[AgentStream] = None

    @property
    def pipelines(self) -> bool:
        return self._stream is not None and self._stream.batches

    def pipeline(self, steps: Sequence[wire.BatchStep]) -> bool:
        """Queue a batch; :meth:`execute` sends and reads it, so its errors are worded as a task's."""
        return self._stream is not None and self._stream.pipeline(steps)

    def received(self) -> Optional[list[Reply]]:
        stream = self._stream
        return stream.received() if stream is not None else None


class _Replies:
    """A sent batch's replies, read as they arrive by a thread of their own until the batch's end
    line (or the stream's end). Why: in a ``linear`` play a fast host's agent runs tasks ahead of
    the one the play reports; had their results stayed unread on the wire, an interrupt could not
    tell that they ran (docs/performance.md, "Latency: pipelining")."""

    def __init__(self, host: str, read: Callable[[], Reply]) -> None:
        self._ready = threading.Condition()
        self._replies: collections.deque[Reply] = collections.deque()
        self._error: Optional[HostUnreachable] = None
        threading.Thread(target=self._read_all, args=(read,), name=f"replies-{host}", daemon=True).start()

    def _read_all(self, read: Callable[[], Reply]) -> None:
        while True:
            try:
                reply = read()
            except HostUnreachable as exc:
                with self._ready:
                    self._error = exc
                    self._ready.notify_all()
                return
            with self._ready:
                self._replies.append(reply)
                self._ready.notify_all()
            if isinstance(reply, wire.BatchEnd):
                return

    def take(self) -> Reply:
        """The next reply, waiting for it; :class:`HostUnreachable` once the stream failed."""
        with self._ready:
            while not self._replies and self._error is None:
                self._ready.wait()
            if self._replies:
                return self._replies.popleft()
            assert self._error is not None
            raise self._error

    def waiting(self) -> list[Reply]:
        with self._ready:
            return list(self._replies)


@dataclass
class _Batch:
    """The steps of a batch this stream sends or reads, and how far the reading got."""

    steps: list[wire.BatchStep]
    sent: bool = False
    step: int = 0  # the step whose result is read next
    item: int = 0  # the request of that step whose result is read next
    read: int = 0  # results read since the batch line was sent
    going: bool = True  # no result of the current step stops the agent (wire.goes_on)

    def expects(self, request: wire.ExecRequest) -> bool:
        return self.step < len(self.steps) and self.steps[self.step].requests[self.item] is request

    def rest(self) -> list[wire.BatchStep]:
        """The steps from the next request on (a step's remaining items stay one step)."""
        head = self.steps[self.step]
        return [dataclasses.replace(head, requests=head.requests[self.item:]), *self.steps[self.step + 1:]]


class AgentStream:
    """Requests and results as JSON lines over a byte pipe pair (one agent, one task at a time).

    Pipelining (docs/architecture.md §3, docs/performance.md): :meth:`pipeline` queues a batch;
    the first :meth:`execute` of its first request sends it as one line, and each later one reads
    its result, in order. When the agent ended the batch before a request the controller still
    wants (a failure it passes over, such as an ignored timeout), the rest goes again as a new
    batch; a request outside the batch first reads the abandoned batch to its end.
    """

    def __init__(self, host: str, writer: IO[bytes], reader: IO[bytes]) -> None:
        self.host, self._writer, self._reader = host, writer, reader
        self._lock = threading.Lock()
        self.batches = False  # the agent's hello lists the batch feature
        self._batch: Optional[_Batch] = None
        self._replies: Optional[_Replies] = None  # the sent batch's replies, until its end line
        self.lines_sent = 0  # request and batch lines: what pipelining saves, for tests and benchmarks

    def _send(self, line: str) -> None:
        try:
            self._writer.write(line.encode("ascii") + b"\n")
            self._writer.flush()
        except (OSError, ValueError, EOFError) as exc:  # paramiko raises EOFError on a dead transport
            raise HostUnreachable(f"lost the agent on {self.host}: {exc}") from None
        self.lines_sent += 1

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
        self.batches = wire.BATCH_FEATURE in hello.features
        return HostFacts.from_dict(hello.facts)

    def pipeline(self, steps: Sequence[wire.BatchStep]) -> bool:
        """Queue ``steps`` (two requests or more, to an agent that runs batches); nothing is sent
        until :meth:`execute` asks for the first request."""
        if not self.batches or sum(len(step.requests) for step in steps) < 2:
            return False
        with self._lock:
            self._abandon()
            self._batch = _Batch(list(steps))
        return True

    def execute(self, request: wire.ExecRequest) -> wire.ExecResult:
        with self._lock:
            batch = self._batch
            if batch is not None and batch.expects(request):
                return self._batched(batch, request)
            self._abandon()
            self._send(wire.encode_request(request))
            reply = self._receive()
        try:
            return wire.result_from_json(reply)  # already parsed: no second JSON round trip
        except wire.WireError as exc:
            raise HostUnreachable(f"the agent on {self.host} sent a bad result: {exc}") from None

    def _batched(self, batch: _Batch, request: wire.ExecRequest) -> wire.ExecResult:
        if not batch.sent:
            self._send_batch(batch)
        reply = self._reply()
        if isinstance(reply, wire.BatchEnd):  # it stopped before this request, which is still wanted
            self._ended(batch, reply)
            batch = self._batch = _Batch(batch.rest())
            self._send_batch(batch)
            reply = self._reply()
            if isinstance(reply, wire.BatchEnd):
                self._ended(batch, reply)  # raises: it ran none of a batch just sent
        assert isinstance(reply, wire.ExecResult)
        if reply.id != request.id:
            raise HostUnreachable(f"the agent on {self.host} answered {reply.id!r} in a batch where {request.id!r} "
                                  "was next")
        batch.read += 1
        step = batch.steps[batch.step]
        batch.going = batch.going and wire.goes_on(reply.status, step.continue_on_failure)
        batch.item += 1
        if batch.item == len(step.requests):
            batch.step, batch.item = batch.step + 1, 0
            if not batch.going or batch.step == len(batch.steps):  # the agent ends the batch here
                end = self._reply()
                if not isinstance(end, wire.BatchEnd):
                    raise HostUnreachable(f"the agent on {self.host} ran past the end of a batch "
                                          f"(after {request.id!r})")
                self._ended(batch, end)
                self._batch = _Batch(batch.steps[batch.step:]) if batch.step < len(batch.steps) else None
            batch.going = True
        return reply

    def _send_batch(self, batch: _Batch) -> None:
        self._send(wire.encode_batch(batch.steps))
        batch.sent = True
        self._replies = _Replies(self.host, self._read_reply)

    def received(self) -> Optional[list[Reply]]:
        """See :meth:`Connection.received`."""
        replies = self._replies
        return replies.waiting() if replies is not None else None

    def _reply(self) -> Reply:
        """The sent batch's next reply, as its reader took it off the wire."""
        replies = self._replies
        assert replies is not None, "a batch reply is read only after the batch was sent"
        reply = replies.take()
        if isinstance(reply, wire.BatchEnd):
            self._replies = None  # its reader has stopped: the wire is the caller's again
        return reply

    def _read_reply(self) -> Reply:
        reply = self._receive()
        try:
            return wire.reply_from_json(reply)
        except wire.WireError as exc:
            raise HostUnreachable(f"the agent on {self.host} sent a bad result: {exc}") from None

    def _ended(self, batch: _Batch, end: wire.BatchEnd) -> None:
        """The agent's end line: it must count the results read, and have run one at least."""
        if end.error is not None or end.ran != batch.read or not batch.read:
            why = end.error or f"it reported {end.ran} result(s) after sending {batch.read}"
            raise HostUnreachable(f"the agent on {self.host} did not run a batch: {why}")

    def _abandon(self) -> None:
        """Forget the queued batch; one already sent is first read to its end (its results were not asked for)."""
        batch, self._batch = self._batch, None
        if batch is None or not batch.sent:
            return
        while not isinstance(self._reply(), wire.BatchEnd):
            pass
