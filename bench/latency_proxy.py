"""A user-space latency proxy: TCP forwarding with RTT/2 added per direction, order and throughput kept.

Why: on loopback a round trip costs ~0.05 ms, so a runner that pays ten round trips per task looks
as fast as one that pays one; over a WAN link it is not. The kernel here has no netem, so
bench/compare.py ``--rtt`` puts this proxy in front of each test sshd. Each accepted connection
gets two pipes (client -> server, server -> client). A pipe is a reader that stamps every chunk
with ``arrival + RTT/2`` and appends it to a queue, and a releaser that writes the queue's head
once it is due: the reader never waits for the releaser, so a stream of chunks keeps its rate and
only shifts by RTT/2 (a ``sleep`` per chunk before forwarding it would serialise them: 160 chunks
of 64 KiB at 25 ms would take 4 s). Chunks leave in the order they came; EOF is queued as a chunk
too (half-close kept). A connection reaches the server 1.5 RTT after it was accepted (SYN,
SYN-ACK, ACK), so a server that speaks first (an SSH banner) is heard 2 RTT after ``connect()``,
as on a real link; what the client sends before that waits in its queue.

    python bench/latency_proxy.py --self-check [--rtt 20]   # ping-pong = RTT, 10 MB not slowed

The self-check (also ``python bench/compare.py --self-check``) measures, through the proxy: the
first byte of a server that speaks first (2 RTT), a ping-pong on an open connection (RTT), and a
10 MB transfer answered by its BLAKE2 digest (order kept; at most RTT slower than through the
proxy without delay, which shows its own copying cost).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from typing import Optional

CHUNK = 256 * 1024
#: Bytes a pipe may hold before its reader pauses (TCP back-pressure). Far above what a delayed
#: link of these RTTs carries in flight, so it never limits throughput here.
QUEUE_LIMIT = 64 * 1024 * 1024
#: epoll waits in whole milliseconds, rounded up, so a timer fires 0-1 ms late: waking SLACK early
#: and releasing what is due within SLACK centres the error on zero (within +-0.5 ms).
SLACK = 0.0005


async def _pipe(reader: asyncio.StreamReader, writer_ready: asyncio.Future[asyncio.StreamWriter],
                delay: float) -> None:
    """Copy ``reader`` to the writer once it exists, each chunk released ``delay`` s after it came."""
    loop = asyncio.get_running_loop()
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    wake = asyncio.Event()
    room = asyncio.Event()
    room.set()
    queued = 0

    async def receive() -> None:
        nonlocal queued
        while True:
            data = await reader.read(CHUNK)
            queue.append((loop.time() + delay, data))  # b"" is EOF: released in order, too
            queued += len(data)
            wake.set()
            if not data:
                return
            if queued > QUEUE_LIMIT:
                room.clear()
                await room.wait()

    async def release() -> None:
        nonlocal queued
        writer = await writer_ready
        while True:
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            due, data = queue[0]
            wait = due - loop.time()
            if wait > SLACK:
                await asyncio.sleep(wait - SLACK)
                continue
            queue.popleft()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                await writer.drain()
                return
            writer.write(data)
            queued -= len(data)
            if queued <= QUEUE_LIMIT:
                room.set()
            if not queue or queue[0][0] > loop.time() + SLACK:  # drain once nothing else is due
                await writer.drain()

    await asyncio.gather(receive(), release())


class LatencyProxy:
    """Forwarders with added latency, all served by one asyncio loop in a daemon thread.

    ``add(target, rtt)`` returns the ``(address, port)`` to connect to instead of ``target``.
    """

    def __init__(self, handshake: bool = True) -> None:
        self.handshake = handshake
        self.loop = asyncio.new_event_loop()
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="latency-proxy", daemon=True)
        self._thread.start()

    def add(self, target: tuple[str, int], rtt: float, listen: Optional[str] = None) -> tuple[str, int]:
        """Listen on ``listen`` (default: the target's address), port chosen by the kernel."""
        address = listen or target[0]

        async def start() -> int:
            server = await asyncio.start_server(lambda r, w: self._accepted(r, w, target, rtt), address, 0,
                                                limit=CHUNK)
            self._servers.append(server)
            return int(server.sockets[0].getsockname()[1])

        return address, asyncio.run_coroutine_threadsafe(start(), self.loop).result()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int],
                  rtt: float) -> None:
        task = self.loop.create_task(self._connection(reader, writer, target, rtt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                          target: tuple[str, int], rtt: float) -> None:
        upstream: asyncio.Future[asyncio.StreamWriter] = self.loop.create_future()
        up_w: Optional[asyncio.StreamWriter] = None
        # client -> server starts now: what the client sends early waits for the connection
        to_server = self.loop.create_task(_pipe(client_r, upstream, rtt / 2))
        try:
            if self.handshake and rtt > 0:
                await asyncio.sleep(1.5 * rtt - SLACK)  # SYN, SYN-ACK, ACK: when the server sees it
            up_r, up_w = await asyncio.open_connection(*target, limit=CHUNK)
            upstream.set_result(up_w)
            client_ready: asyncio.Future[asyncio.StreamWriter] = self.loop.create_future()
            client_ready.set_result(client_w)
            await asyncio.gather(to_server, _pipe(up_r, client_ready, rtt / 2))
        except (OSError, asyncio.CancelledError):
            pass  # a reset on either side ends both (as a dropped link would)
        finally:
            to_server.cancel()
            for w in (client_w, up_w):
                if w is not None:
                    w.close()

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        with contextlib.suppress(RuntimeError):
            self.loop.close()


# -- self-check -----------------------------------------------------------------------------------

class _Handler(socketserver.BaseRequestHandler):
    """First line picks the mode: ``hello`` (server speaks first), ``echo``, ``sink``."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.server.server_address[1] == getattr(self.server, "hello_port", None):
            sock.sendall(b"hello\n")
            return
        mode = b""
        while not mode.endswith(b"\n"):
            mode += sock.recv(1)
        if mode == b"echo\n":
            while data := sock.recv(65536):
                sock.sendall(data)
        elif mode == b"sink\n":
            sock.sendall(b"ready\n")
            digest, size = hashlib.blake2b(), 0
            while data := sock.recv(CHUNK):
                digest.update(data)
                size += len(data)
            sock.sendall(f"{size} {digest.hexdigest()}\n".encode())


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _connect(where: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(where, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        more = sock.recv(4096)
        if not more:
            break
        data += more
    return data


def _transfer(where: tuple[str, int], payload: bytes) -> tuple[float, str]:
    """Seconds from the first byte sent to the sink's digest (on an open connection), and the digest."""
    with _connect(where) as sock:
        sock.sendall(b"sink\n")
        assert _line(sock) == b"ready\n"
        start = time.perf_counter()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = _line(sock).decode()
        return time.perf_counter() - start, answer


def self_check(rtt_ms: float = 20.0, tolerance_ms: float = 3.0, size: int = 10 * 1024 * 1024,
               address: str = "127.0.0.1") -> bool:
    """Measure the proxy against its promises; print the figures; True when all hold."""
    rtt = rtt_ms / 1000
    # the test servers run in a process of their own: in this one they would share the GIL with
    # the proxy's thread and the client, and the check would measure that contention
    servers = subprocess.Popen([sys.executable, __file__, "--check-servers", address], stdout=subprocess.PIPE,
                               stdin=subprocess.PIPE, text=True)
    assert servers.stdout is not None and servers.stdin is not None
    echo_port, hello_port = map(int, servers.stdout.readline().split())
    proxy = LatencyProxy()
    ok = True

    def verdict(good: bool) -> str:
        nonlocal ok
        ok = ok and good
        return "ok" if good else "FAILED"

    try:
        direct = (address, echo_port)
        delayed = proxy.add(direct, rtt)
        hello_delayed = proxy.add((address, hello_port), rtt)
        zero = proxy.add(direct, 0.0)
        print(f"latency proxy self-check, RTT {rtt_ms:g} ms, tolerance {tolerance_ms:g} ms")

        hello_zero = proxy.add((address, hello_port), 0.0)

        def first_line(where: tuple[str, int]) -> float:
            firsts = []
            for _ in range(7):
                start = time.perf_counter()
                with _connect(where) as sock:
                    assert _line(sock) == b"hello\n"
                firsts.append((time.perf_counter() - start) * 1000)
            return statistics.median(firsts)

        setup = first_line(hello_zero)  # connection set-up through the proxy, and the server's accept
        first = first_line(hello_delayed) - setup
        print(f"  connect -> server's first line: {first:.2f} ms more than without delay (want 2 RTT = "
              f"{2 * rtt_ms:g}: handshake, then the line) {verdict(abs(first - 2 * rtt_ms) <= tolerance_ms)}")

        for label, where, want in (("ping-pong, no delay", zero, 0.0), ("ping-pong", delayed, rtt_ms)):
            with _connect(where) as sock:
                sock.sendall(b"echo\n")
                times = []
                for i in range(21):
                    message = b"%d\n" % i
                    start = time.perf_counter()
                    sock.sendall(message)
                    got = b""
                    while len(got) < len(message):
                        got += sock.recv(64)
                    times.append((time.perf_counter() - start) * 1000)
                    assert got == message, (got, message)
                times = times[1:]  # the first waits for the emulated handshake
            med, lo, hi = statistics.median(times), min(times), max(times)
            good = abs(med - want) <= tolerance_ms and lo >= want - 0.5
            print(f"  {label}: median {med:.2f} ms, min {lo:.2f}, max {hi:.2f} (want {want:g}) {verdict(good)}")

        payload = hashlib.shake_256(b"sandfleet").digest(size)
        expected = f"{size} {hashlib.blake2b(payload).hexdigest()}\n"
        def median_transfer(where: tuple[str, int]) -> float:
            _transfer(where, payload)  # warm
            seconds = []
            for _ in range(5):
                took, answer = _transfer(where, payload)
                seconds.append(took)
                if answer != expected:
                    print(f"  10 MB transfer: bytes or order changed ({answer.strip()[:40]}...) {verdict(False)}")
            return statistics.median(seconds)

        base, copied, proxied = (median_transfer(where) for where in (direct, zero, delayed))
        extra = (proxied - copied) * 1000
        mb = size / 1e6
        print(f"  {mb:.0f} MB sent, digest back: direct {base * 1000:.1f} ms ({mb / base:.0f} MB/s); "
              f"proxy, no delay {copied * 1000:.1f} ms ({mb / copied:.0f} MB/s: its copy); "
              f"proxy, RTT {rtt_ms:g} ms: {proxied * 1000:.1f} ms")
        print(f"    the delay added {extra:.1f} ms to the transfer (want <= RTT + tolerance = "
              f"{rtt_ms + tolerance_ms:g}: the last byte RTT/2 later, the digest RTT/2 back; a sleep per "
              f"chunk would add ~{size // CHUNK} x RTT/2 = {size // CHUNK * rtt_ms / 2:.0f} ms); digests match "
              f"{verdict(extra <= rtt_ms + tolerance_ms)}")
    finally:
        proxy.close()
        servers.stdin.close()  # EOF: it exits
        servers.wait(timeout=10)
    print("self-check " + ("passed" if ok else "FAILED"))
    return ok


def check_servers(address: str) -> int:
    """The self-check's servers (a process of their own): ports on stdout, exit at EOF on stdin."""
    server = _Server((address, 0), _Handler)
    hello = _Server((address, 0), _Handler)
    hello.hello_port = hello.server_address[1]  # type: ignore[attr-defined]
    for s in (server, hello):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(server.server_address[1], hello.server_address[1], flush=True)
    sys.stdin.read()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-check", action="store_true", help="measure the proxy against its promises")
    parser.add_argument("--rtt", type=float, default=20.0, help="round-trip time in ms (default 20)")
    parser.add_argument("--tolerance", type=float, default=3.0, help="ms (default 3)")
    parser.add_argument("--check-servers", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check_servers:
        return check_servers(args.check_servers)
    if not args.self_check:
        parser.error("nothing to do: pass --self-check (bench/compare.py --rtt uses the proxy)")
    return 0 if self_check(args.rtt, args.tolerance) else 1


if __name__ == "__main__":
    sys.exit(main())
