"""Many billing events for many clients, and posting them like a billing system: shared
by the alerts' kill test (tests/test_alerts_durability.py) and its benchmark
(bench/alerts.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import aiohttp

from bot.signatures import sign

# A client's five events, in the order they happen.
TYPES = ("invoice.created", "invoice.paid", "service.suspended", "service.unsuspended",
         "quote.created")  # fmt: skip


def event_bodies(clients: int, per_client: int = len(TYPES)) -> list[bytes]:
    """`per_client` events for each of `clients` (tests.billing_fixture.bulk_clients'
    ids), client after client in turns, as a billing system's nightly run interleaves
    them. Event ids end in the event's number within its client."""
    bodies = []
    for n in range(per_client):
        for c in range(clients):
            client = f"load{1000 + c}"
            data = {
                "invoice_id": f"{client}-{n}",
                "total": f"{10 + n}.50",
                "due_date": "2027-01-10",
                "service_id": f"s-{client}",
                "service": f"sitio{c}.com.ar",
                "quote_id": f"Q{c}-{n}",
            }
            event = {
                "id": f"ev-{client}-{n}",
                "type": TYPES[n % len(TYPES)],
                "occurred_at": datetime.now(UTC).isoformat(),
                "client_id": client,
                "data": data,
            }
            bodies.append(json.dumps(event).encode())
    return bodies


async def post_events(url: str, bodies: list[bytes], secret: str, concurrency: int = 16) -> None:
    """POST each event to `url`/events until it is answered 202, retrying as a forwarder
    would (a refused connection while the server is down, a 503)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            headers = {"Content-Type": "application/json", "X-Signature-256": sign(body, secret)}
            attempt = 0
            while True:
                try:
                    async with session.post(f"{url}/events", data=body, headers=headers) as r:
                        if r.status == 202:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                attempt += 1
                await asyncio.sleep(min(1.0, 0.05 * attempt))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
