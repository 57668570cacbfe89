"""The load generator: raw HTTP/1.1 keep-alive requests from one asyncio process, open or closed loop.

Cheap per request on purpose (the server under test shares the same two
cores): request bytes are formatted in one step, answers are parsed only as
far as the status line, ``Content-Length`` and the few bytes of the body that
say the answer is the one expected.

Connections stand for a load balancer's keep-alive pool in front of the API
servers (a player heartbeats every 20 s, past gunicorn's 5 s keep-alive, so
it is the balancer that keeps connections open): a fixed pool, each
connection carrying one request at a time, taken round-robin.

Open loop: request ``i`` of a level is due at ``start + i / rate``, whatever
happened to the ones before; its latency is measured from that intended
time, so time spent waiting for a free connection (the server is behind)
counts, and coordinated omission is accounted for. Requests still unanswered
when the level's drain time is over count as unanswered, with the time
they had waited (a lower bound) among the latencies.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.players.population import FIRST, REFUSED, REPEAT, STOP, Request

# The answer each kind must get: its status, and bytes its body must hold (orjson writes no spaces).
EXPECTED = {
    REPEAT: (200, b'"allowed":true'),
    FIRST: (200, b'"allowed":true'),
    STOP: (204, b""),
    REFUSED: (400, b'"code":"concurrency_limit_reached"'),
}
CONNECT_TIMEOUT = 5.0


@dataclass
class LevelResult:
    """What one level of load sent and got back."""

    sent: int = 0
    answered: int = 0
    unanswered: int = 0
    errors: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    sent_by_kind: Counter[str] = field(default_factory=Counter)
    expected_by_kind: Counter[str] = field(default_factory=Counter)
    unexpected_by_kind: Counter[str] = field(default_factory=Counter)
    latencies_ms: array = field(default_factory=lambda: array("d"))
    seconds: float = 0.0  # from the first intended send to the end of the level's sending

    def record(self, kind: str, status: int, body: bytes, latency: float) -> None:
        """One answer."""
        self.answered += 1
        self.statuses[str(status)] += 1
        self.latencies_ms.append(latency * 1000)
        want_status, want_bytes = EXPECTED[kind]
        if status == want_status and want_bytes in body:
            self.expected_by_kind[kind] += 1
        else:
            self.unexpected_by_kind[kind] += 1


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self, on_answer: Callable[[Connection, int, bytes], None], on_lost: Callable[[Connection], None]):
        self.on_answer = on_answer
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: tuple[str, float] | None = None  # (kind, intended time) of the request in flight
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, kind: str, intended: float) -> None:
        """Send one request."""
        self.pending = (kind, intended)
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        status = int(head[9:12])
        length = 0
        lowered = head.lower()
        at = lowered.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = lowered.find(b"\r\n", at + 2)
            length = int(lowered[at + 17 : stop if stop > 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        keep = b"\r\nconnection: close" not in lowered
        self.on_answer(self, status, body)
        if not keep:
            self.close()

    def close(self) -> None:
        """Close the connection (the pool opens another when needed)."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.on_lost(self)


class Generator:
    """Sends a population's requests to one server through a pool of keep-alive connections."""

    def __init__(
        self,
        host: str,
        port: int,
        next_request: Callable[[], Request],
        connections: int,
        on_unsent: Callable[[Request], None] = lambda request: None,
    ) -> None:
        self.host = host
        self.port = port
        self.next_request = next_request
        # Told of each request that was dropped without being sent (still queued when a level ended).
        self.on_unsent = on_unsent
        self.max_connections = connections
        self.idle: deque[Connection] = deque()
        self.connections: set[Connection] = set()
        self.open_count = 0
        self.opening = 0
        self.queue: deque[tuple[bytes, Request, float]] = deque()  # waiting for a free connection
        self.result = LevelResult()
        self.in_flight = 0
        self.loop = asyncio.get_event_loop()
        self.on_idle: Callable[[Connection], None] | None = None
        self.head = f"Host: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: ".encode()

    def packed(self, request: Request) -> bytes:
        """The request's bytes."""
        return b"POST %s HTTP/1.1\r\n%s%d\r\n\r\n%s" % (
            request.path.encode(),
            self.head,
            len(request.body),
            request.body,
        )

    # --- Connections ----------------------------------------------------------

    def answered(self, conn: Connection, status: int, body: bytes) -> None:
        """A connection got its answer."""
        kind, intended = conn.pending
        conn.pending = None
        self.in_flight -= 1
        now = time.perf_counter()
        self.result.record(kind, status, body, now - intended)
        if not conn.closed:
            self.release(conn)

    def lost(self, conn: Connection) -> None:
        """A connection closed; its request in flight, if any, failed."""
        self.open_count -= 1
        self.connections.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.pending is not None:
            conn.pending = None
            self.in_flight -= 1
            self.result.errors += 1
        self.fill()

    def release(self, conn: Connection) -> None:
        """A free connection: the next waiting request, else back to the pool (or to a closed-loop sender)."""
        if self.on_idle is not None:
            self.on_idle(conn)
        elif self.queue:
            data, request, intended = self.queue.popleft()
            conn.send(data, request.kind, intended)
        else:
            self.idle.append(conn)

    def fill(self) -> None:
        """Open connections while requests wait and the pool has room."""
        while self.queue and self.open_count + self.opening < self.max_connections:
            self.opening += 1
            self.loop.create_task(self.open())

    async def open(self) -> None:
        """Open one connection and give it work."""
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: Connection(self.answered, self.lost), self.host, self.port),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError):
            self.opening -= 1
            self.result.errors += 1
            if self.queue:  # the request that waited longest fails with it, never sent
                self.on_unsent(self.queue.popleft()[1])
                self.in_flight -= 1
            await asyncio.sleep(0.05)
            self.fill()
            return
        self.opening -= 1
        self.open_count += 1
        self.connections.add(conn)
        self.release(conn)

    async def warm(self, count: int) -> None:
        """Open ``count`` connections ahead (so the first second does not measure connects)."""
        while self.open_count < min(count, self.max_connections):
            _, conn = await self.loop.create_connection(
                lambda: Connection(self.answered, self.lost), self.host, self.port
            )
            self.open_count += 1
            self.connections.add(conn)
            self.idle.append(conn)

    def dispatch(self, request: Request, intended: float) -> None:
        """Send now on a free connection, or wait in line for one."""
        data = self.packed(request)
        self.in_flight += 1
        self.result.sent += 1
        self.result.sent_by_kind[request.kind] += 1
        if self.idle:
            conn = self.idle.popleft()
            if not conn.closed:
                conn.send(data, request.kind, intended)
                return
        self.queue.append((data, request, intended))
        self.fill()

    async def drain(self, seconds: float) -> None:
        """Wait for the answers in flight, at most ``seconds``; what is left counts as unanswered."""
        deadline = time.perf_counter() + seconds
        while self.in_flight > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        now = time.perf_counter()
        late = [intended for _, _, intended in self.queue]
        for _, request, _ in self.queue:
            self.on_unsent(request)  # never sent: the players it stands for must not lose track
        self.queue.clear()
        for conn in [c for c in self.connections if c.pending is not None and not c.closed]:
            late.append(conn.pending[1])
            conn.pending = None
            conn.close()
        for intended in late:
            self.result.unanswered += 1
            self.result.latencies_ms.append((now - intended) * 1000)
        self.in_flight = 0

    # --- Loops ------------------------------------------------------------------

    async def open_loop(self, rate: float, seconds: float, drain_seconds: float = 10.0) -> LevelResult:
        """Send at ``rate`` per second for ``seconds``, each request at its intended time; then drain."""
        self.result = LevelResult()
        self.on_idle = None
        total = int(rate * seconds)
        start = time.perf_counter() + 0.01
        i = 0
        while i < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * rate) + 1)
            while i < due:
                self.dispatch(self.next_request(), start + i / rate)
                i += 1
            # Sleep until the next request is due (asyncio's timers are about 1 ms coarse).
            wait = start + i / rate - time.perf_counter()
            await asyncio.sleep(max(0.0, wait))
        self.result.seconds = total / rate
        await self.drain(drain_seconds)
        return self.result

    async def closed_loop(self, connections: int, seconds: float) -> LevelResult:
        """Each of ``connections`` sends its next request as soon as it has its answer, for ``seconds``."""
        self.result = LevelResult()
        await self.warm(connections)
        end = time.perf_counter() + seconds
        sending = True

        def next_on(conn: Connection) -> None:
            if sending and time.perf_counter() < end:
                request = self.next_request()
                self.in_flight += 1
                self.result.sent += 1
                self.result.sent_by_kind[request.kind] += 1
                conn.send(self.packed(request), request.kind, time.perf_counter())
            else:
                self.idle.append(conn)

        self.on_idle = next_on
        started = time.perf_counter()
        starters = [self.idle.popleft() for _ in range(min(connections, len(self.idle)))]
        for conn in starters:
            next_on(conn)
        while time.perf_counter() < end:
            await asyncio.sleep(0.05)
        sending = False
        self.result.seconds = time.perf_counter() - started
        await self.drain(10.0)
        self.on_idle = None
        return self.result
