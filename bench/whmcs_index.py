"""One full pass of the WHMCS phone-index sync against the fake WHMCS with 50,000 clients:
the `whmcs_index` phase of `make bench`, or alone:

    python -m bench.whmcs_index [--clients 50000]

The fake WHMCS runs as its own process (`python -m bot.fakes.whmcs`, loaded from a
generated file of Argentine mobiles); the pass (`PhoneIndex.sync`, what `python -m bot
whmcs sync` runs) runs in this process on a fresh database, so the CPU of each side is
its own. Reports clients/s, seconds, API calls, how the pass's time splits between
waiting for WHMCS and writing pages to the index, and CPU per process.

The fake answers from memory: the real WHMCS adds, per call, its PHP bootstrap, its
queries and a bcrypt check of the API secret (see bench/README.md, 2026-12-02).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import pg
from bench.procs import ROOT, Child, CpuMeter, free_port
from bot.whmcs.api import DETAIL_CONCURRENCY, WhmcsApi
from bot.whmcs.phone_index import PhoneIndex
from flows.billing import Found
from tests.billing_fixture import bulk_clients, bulk_wa_id

CLIENTS = 50_000
FIRST = 7_000_000  # bulk_clients' numbering: client i has the WhatsApp id bulk_wa_id(i)
SYNC = "whmcs sync (bench process)"
FAKE = "fake WHMCS"


class FakeWhmcsProcess(Child):
    """`python -m bot.fakes.whmcs`: ready when it prints the URL it serves on (it has
    no health route)."""

    async def _wait_healthy(self, url: str, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while url not in self.tail():
            if self.proc.returncode is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not serving after {timeout} s:\n{self.tail()}")
            await asyncio.sleep(0.1)


async def full_pass(clients: int, logs: Path, *, code: Path = ROOT) -> dict[str, Any]:
    """A fake WHMCS with `clients` clients, one sync pass over them from an empty index;
    the fake runs from the checkout `code`, the pass from this one."""
    logs.mkdir(parents=True, exist_ok=True)
    data = logs / f"whmcs-{clients}-clients.json"
    data.write_text(json.dumps(bulk_clients(clients, start=FIRST)), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    fake = FakeWhmcsProcess(
        FAKE,
        ["bot.fakes.whmcs", str(data), "--port", str(port)],
        dict(os.environ),
        logs / "whmcs-fake.log",
        cwd=code,
    )
    try:
        await fake.start(url, timeout=120)
        async with pg.temporary_database() as dsn, pg.pool(dsn) as pool:
            return await _measure(clients, url, fake.pid, pool)
    finally:
        await fake.stop()
        data.unlink(missing_ok=True)


async def _measure(clients: int, url: str, fake_pid: int, pool: asyncpg.Pool) -> dict[str, Any]:
    api = WhmcsApi(
        url, identifier="fake-identifier", secret="fake-secret", access_key="", timeout_seconds=30
    )
    try:

        async def database_pids() -> set[int]:
            rows = await pool.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            )
            return {r["pid"] for r in rows}

        phones = PhoneIndex(api, pool, "AR")
        meter = CpuMeter({SYNC: os.getpid(), FAKE: fake_pid}, database_pids)
        before = await meter.snapshot()
        started = time.monotonic()
        report = await phones.sync()
        seconds = time.monotonic() - started
        cpu = meter.percent(before, await meter.snapshot())
        indexed = await pool.fetchval("SELECT count(*) FROM whmcs_clients")
        checked = [FIRST, FIRST + clients // 2, FIRST + clients - 1]
        found = [(await phones.find(bulk_wa_id(i))).found is Found.ONE for i in checked]
    finally:
        await api.close()
    pages = max(1, report.calls - report.clients)  # GetClients calls: one per page
    return {
        "clients": clients,
        "indexed": indexed,
        "complete": report.clients == clients and indexed == clients and all(found),
        "seconds": round(seconds, 2),
        "clients_per_s": round(clients / seconds, 1) if seconds > 0 else 0.0,
        "api_calls": report.calls,
        "detail_concurrency": DETAIL_CONCURRENCY,
        "whmcs_seconds": report.whmcs_seconds,
        "database_seconds": report.database_seconds,
        "other_seconds": round(seconds - report.whmcs_seconds - report.database_seconds, 2),
        # What one call took, with DETAIL_CONCURRENCY in flight.
        "round_trip_ms": round(1000 * report.whmcs_seconds * DETAIL_CONCURRENCY / report.calls, 2)
        if report.calls
        else None,
        "database_ms_per_page": round(1000 * report.database_seconds / pages, 2),
        "cpu_percent": cpu,
    }


def line(run: dict[str, Any]) -> str:
    """The bench line: a row of `make bench`'s summary table."""
    return (
        f"| 6 WHMCS phone index, full sync pass | fake WHMCS, {run['detail_concurrency']} "
        f"calls in flight | {run['clients']:,} clients | {run['clients_per_s']:,.0f} clients/s "
        f"| – | – | {run['seconds']:,.1f} s, {run['api_calls']:,} API calls "
        f"(round trip {run['round_trip_ms']} ms); waiting for WHMCS {run['whmcs_seconds']:,.1f} s, "
        f"writing pages {run['database_seconds']:,.1f} s ({run['database_ms_per_page']} ms a "
        f"page), the rest {run['other_seconds']:,.1f} s"
        f"{'' if run['complete'] else ' (INCOMPLETE)'} |"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.whmcs_index", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--clients", type=int, default=CLIENTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    logs = Path(__file__).resolve().parent / "results" / f"{stamp}-whmcs-index"
    run = asyncio.run(full_pass(args.clients, logs))
    print(line(run))
    cpu = run["cpu_percent"]
    print(
        "CPU, % of one core: "
        + ", ".join(f"{name} {usage['total']}" for name, usage in cpu.items()),
        file=sys.stderr,
    )
    (logs / "whmcs-index.json").write_text(json.dumps(run, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
