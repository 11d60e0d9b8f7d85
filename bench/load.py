"""The load generator: a minimal HTTP/1.1 keep-alive client and closed/open-loop drivers.

The machine has few cores and the generator shares them with the servers it measures,
so it is kept cheap: every request is prepared as raw bytes beforehand and a connection
is a bare `asyncio.Protocol` that writes them and reads back one response (status line,
headers, `Content-Length` body). aiohttp's client would spend several times more CPU per
request, CPU taken from the server under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.fakes import payloads as wa_payloads

REQUEST_TIMEOUT = 30.0


class HTTPError(Exception):
    """The connection broke or the response was not HTTP/1.1 we understand."""


def post_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The exact bytes of one keep-alive POST."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def signed_webhook(
    host: str, port: int, wa_id: str, text: str, *, phone_id: str, app_secret: str
) -> bytes:
    """One customer's text message as Meta posts it, signed, ready to write."""
    payload = wa_payloads.messages_update(phone_id, [wa_payloads.inbound_text(wa_id, text)])
    body, headers = wa_payloads.signed_body(payload, app_secret)
    return post_request(host, port, "/webhook", body, headers)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HTTPError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        try:
            status = int(head[0].split(" ", 2)[1])
            length = next(
                int(line.split(":", 1)[1])
                for line in head[1:]
                if line[:15].lower() == "content-length:"
            )
        except (IndexError, ValueError, StopIteration):
            self._waiter.set_exception(HTTPError(f"unreadable response head: {head[:3]}"))
            return
        if len(self._buffer) < end + 4 + length:
            return
        del self._buffer[: end + 4 + length]
        self._waiter.set_result(status)

    @property
    def usable(self) -> bool:
        return not self._closed and self._transport is not None

    async def request(self, raw: bytes) -> int:
        """Write one request and return the response's status code."""
        if not self.usable:
            raise HTTPError("connection closed")
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it was meant to leave and did (wall clock), how long it took."""

    index: int
    sent_at: float  # time.time() when written
    latency: float  # seconds, from the intended send time (open loop) or the write
    status: int  # 0: no response (connection error or timeout)


@dataclass(slots=True)
class LoadResult:
    samples: list[Sample]
    started: float  # time.time()
    finished: float
    connections: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 200]

    @property
    def errors(self) -> int:
        return len(self.samples) - len(self.ok)

    @property
    def wall(self) -> float:
        return self.finished - self.started

    @property
    def rate(self) -> float:
        return len(self.ok) / self.wall if self.wall > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return percentile([s.latency * 1000 for s in self.ok], q)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.samples),
            "ok": len(self.ok),
            "errors": self.errors,
            "statuses": _count_statuses(self.samples),
            "connections": self.connections,
            "wall_s": round(self.wall, 3),
            "rate_per_s": round(self.rate, 1),
            "p50_ms": round(self.latency_ms(50), 2),
            "p90_ms": round(self.latency_ms(90), 2),
            "p99_ms": round(self.latency_ms(99), 2),
            "max_ms": round(self.latency_ms(100), 2),
            **self.extra,
        }


def _count_statuses(samples: Sequence[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[str(s.status)] = counts.get(str(s.status), 0) + 1
    return counts


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def closed_loop(
    host: str, port: int, requests: Sequence[bytes], connections: int
) -> LoadResult:
    """Each of `connections` connections sends its next request as soon as the previous
    one is answered, until every request was sent once."""
    samples: list[Sample] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        conn = await _Connection.open(host, port)
        try:
            while next_index < len(requests):
                index = next_index
                next_index += 1
                sent_at = time.time()
                start = time.perf_counter()
                try:
                    if not conn.usable:
                        conn = await _Connection.open(host, port)
                    status = await conn.request(requests[index])
                except (HTTPError, OSError, TimeoutError):
                    status = 0
                    conn.close()
                samples.append(Sample(index, sent_at, time.perf_counter() - start, status))
        finally:
            conn.close()

    started = time.time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    finished = time.time()
    samples.sort(key=lambda s: s.index)
    return LoadResult(samples, started, finished, connections)


async def open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    rate: float,
    *,
    max_connections: int = 512,
) -> LoadResult:
    """Offer `rate` requests per second on a fixed schedule, whatever the answers do.

    Request i is due at start + i/rate. It takes an idle keep-alive connection, or opens
    a new one (up to `max_connections`), so a slow server does not slow the offered load.
    Latency counts from the *due* time: if the generator or the server falls behind, the
    waiting shows (no coordinated omission).
    """
    loop = asyncio.get_running_loop()
    idle: deque[_Connection] = deque()
    opened = 0
    in_flight: set[asyncio.Task[None]] = set()
    samples: list[Sample] = []
    late_sends = 0
    max_send_lag = 0.0

    async def one(index: int, due_perf: float, due_wall: float) -> None:
        nonlocal opened
        conn: _Connection | None = None
        status = 0
        try:
            conn = idle.pop() if idle else None
            if conn is None or not conn.usable:
                opened += 1
                conn = await _Connection.open(host, port)
            status = await conn.request(requests[index])
        except (HTTPError, OSError, TimeoutError):
            if conn is not None:
                conn.close()
            conn = None
        finally:
            samples.append(Sample(index, due_wall, time.perf_counter() - due_perf, status))
            if conn is not None and conn.usable:
                idle.append(conn)

    start_perf = time.perf_counter() + 0.05
    start_wall = time.time() + 0.05
    interval = 1.0 / rate
    for index in range(len(requests)):
        due = start_perf + index * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = time.perf_counter() - due
        max_send_lag = max(max_send_lag, lag)
        if lag > 0.010:
            late_sends += 1
        while len(in_flight) >= max_connections:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        task = loop.create_task(one(index, due, start_wall + index * interval))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    last_due = time.time()
    if in_flight:
        await asyncio.wait(in_flight)
    finished = time.time()
    for conn in idle:
        with contextlib.suppress(Exception):
            conn.close()
    samples.sort(key=lambda s: s.index)
    result = LoadResult(samples, start_wall, finished, opened)
    result.extra = {
        "offered_rate_per_s": rate,
        "connections_opened": opened,
        "sends_late_over_10ms": late_sends,
        "max_send_lag_ms": round(max_send_lag * 1000, 2),
        "drain_after_last_send_ms": round((finished - last_due) * 1000, 2),
    }
    return result
