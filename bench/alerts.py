"""Alerts end to end: N billing events for N/5 clients posted to a real `python -m bot
serve` (its HTTP and background processes), the fake Cloud API in this process.

    python -m bench.alerts [--events 10000] [--rate 1000]

Reports events/s accepted by POST /events, events/s settled into the outbox by the alert
worker, and alerts/s delivered to the fake Cloud API (bounded by SEND_RATE_PER_SECOND,
here `--rate`, and by the per-person pacing: 5 alerts per client with a burst of 5), and
the CPU of each process. All clients are outside their 24 h window: every alert is a
template.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import pg
from bot.fakes.cloud_api import FakeCloudAPI
from store.billing_local import LocalBilling
from tests.billing_fixture import bulk_clients
from tests.event_load import event_bodies, post_events
from tests.harness import APP_SECRET, PHONE_ID, TOKEN
from tests.procs import ServerProcess, free_port, server_env

SECRET = "bench-events"
PER_CLIENT = 5


async def run(events: int, rate: float) -> dict[str, Any]:
    async with pg.temporary_database() as dsn, pg.pool(dsn) as pool:
        await LocalBilling(pool).load(bulk_clients(events // PER_CLIENT))
        async with FakeCloudAPI(
            phone_id=PHONE_ID, token=TOKEN, app_secret=APP_SECRET, statuses=("sent",)
        ) as fake:
            port = free_port()
            fake.webhook_url = f"http://127.0.0.1:{port}/webhook"
            env = server_env(
                dsn, fake.base_url, port, EVENTS_SECRET=SECRET, SEND_RATE_PER_SECOND=str(rate),
                RECIPIENT_BURST=str(PER_CLIENT), RECIPIENT_INTERVAL_SECONDS="6",
            )  # fmt: skip
            with tempfile.TemporaryDirectory() as logs:
                server = ServerProcess(env, Path(logs) / "server.log")
                await server.start()
                try:
                    payload = event_bodies(events // PER_CLIENT, PER_CLIENT)
                    started = time.monotonic()
                    await post_events(server.url, payload, SECRET)
                    posted = time.monotonic() - started
                    settled_at = delivered_at = None
                    while settled_at is None or delivered_at is None:
                        now = time.monotonic()
                        if (
                            settled_at is None
                            and await pool.fetchval(
                                "SELECT count(*) FROM events WHERE processed_at IS NULL"
                            )
                            == 0
                        ):
                            settled_at = now - started
                        if delivered_at is None and len(fake.sent) >= events:
                            delivered_at = now - started
                        if now - started > 600:
                            raise TimeoutError(f"{len(fake.sent)} of {events} after 600 s")
                        await asyncio.sleep(0.05)
                finally:
                    server.stop()
    return {
        "events": events,
        "send_rate": rate,
        "posted_per_s": round(events / posted, 1),
        "settled_per_s": round(events / settled_at, 1),
        "delivered_per_s": round(events / delivered_at, 1),
        "posted_s": round(posted, 2),
        "settled_s": round(settled_at, 2),
        "delivered_s": round(delivered_at, 2),
    }


def line(r: dict[str, Any]) -> str:
    return (
        f"| alerts end to end | serve (HTTP + background), fake Cloud API, SEND_RATE "
        f"{r['send_rate']:,.0f}/s | {r['events']:,} events, {r['events'] // PER_CLIENT:,} "
        f"clients | POST /events {r['posted_per_s']:,.0f}/s; to outbox "
        f"{r['settled_per_s']:,.0f} events/s; delivered {r['delivered_per_s']:,.0f} alerts/s | "
        f"{r['posted_s']} s / {r['settled_s']} s / {r['delivered_s']} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.alerts")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.events, args.rate))
    print(json.dumps(result))
    print(line(result))


if __name__ == "__main__":
    main()
