"""`python -m bench.run` (`make bench`): how fast the service is on this machine.

Phases, each against fresh processes (and a fresh database, dropped after):

1. ceiling – a bare aiohttp server (`bench.bare_server`) answering the same webhook POSTs:
             requests/s and latency at 32 connections (closed loop).
2. ack     – the real service: webhook requests/s and ack latency at 32 connections
             (closed loop, one signed message from a distinct customer each), then an
             open loop offering 500 messages/s for 10 s (target p99 ≤ 50 ms).
3. e2e     – webhook in → reply at the fake Cloud API, identified customers, one message
             per customer, closed loop at 1, 8 and 32 connections.
4. drain   – 10,000 outbox rows for 10,000 recipients with an open 24 h window, inserted
             before the service starts: sends/s until all are accepted.
5. whmcs_index – one full sync pass of the WHMCS phone index against the fake WHMCS with
             50,000 clients (`bench.whmcs_index`): clients/s, API calls, time waiting
             for WHMCS against time writing to the index.

Every service gets one unmeasured burst of 64 webhooks first (`warm_up`): a fresh
process's first burst pays for connections and statement planning once.

Two diagnostic rows help read those: the open loop again with the inbox workers off
(DISPATCH_CONCURRENCY=0: the webhook path alone), and the 32-connection e2e run again on
a database with history (answered messages, ANALYZE) instead of empty tables. For every
window: CPU and run-queue wait of each process, and what PostgreSQL was busy with
(sampled pg_stat_activity). `--profile` adds py-spy runs of the service and the fake.

Prints a Markdown table and writes it, with the raw JSON, to `bench/results/`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from bench import pg, whmcs_index
from bench.load import closed_loop, open_loop, percentile, signed_webhook
from bench.procs import ROOT, Child, CpuMeter, free_port
from bench.profile import ProfileSummary, profiling, py_spy_path
from bench.report import ACK_P99_TARGET_MS, Report, markdown
from bench.stack import SERVICE_SETTINGS, Setup, Stack, parse_time
from tests.billing_fixture import bulk_wa_id
from tests.harness import APP_SECRET, PHONE_ID

RESULTS = Path(__file__).resolve().parent / "results"
HOST = "127.0.0.1"
TEXT = "hola"  # always exactly one reply (the menu), for a known customer in any state
PHASES = ("ceiling", "ack", "e2e", "drain", "whmcs_index")


@dataclass(frozen=True)
class Config:
    connections: int = 32
    ceiling_requests: int = 50_000
    ack_requests: int = 5_000
    open_rate: float = 500.0
    open_seconds: float = 10.0
    # After the open loop, how long to wait for the service to work off what it took in.
    open_drain_wait: float = 15.0
    e2e_runs: tuple[tuple[int, int], ...] = ((1, 300), (8, 1_500), (32, 5_000))
    e2e_timeout: float = 60.0
    # Answered messages already in the database of the diagnostic e2e run (0: no such run).
    history_rows: int = 20_000
    # Messages of the extra e2e run py-spy samples (--profile; its extra drain run has
    # `drain_rows` rows).
    profile_messages: int = 2_000
    drain_rows: int = 10_000
    drain_timeout: float = 90.0
    whmcs_clients: int = 50_000
    e2e_statuses: str = "sent"
    drain_statuses: str = "none"
    profile: bool = False
    phases: tuple[str, ...] = PHASES
    # Extra settings for the service in every phase (`--env KEY=VALUE`).
    service_env: tuple[tuple[str, str], ...] = ()
    # The checkout `bot serve` and the fake run from (`--code DIR`).
    code: Path = ROOT

    @property
    def open_count(self) -> int:
        return round(self.open_rate * self.open_seconds)


def webhooks(port: int, customers: Sequence[int]) -> list[bytes]:
    """One signed text message per customer, ready to write."""
    return [
        signed_webhook(HOST, port, bulk_wa_id(c), TEXT, phone_id=PHONE_ID, app_secret=APP_SECRET)
        for c in customers
    ]


def stack(
    cfg: Config,
    logs: Path,
    label: str,
    *,
    statuses: str,
    customers: range | None = None,
    setup: Setup | None = None,
    env: dict[str, str] | None = None,
) -> Stack:
    """A `Stack` whose service also gets the `--env` settings of this run."""
    service_env = dict(cfg.service_env) | (env or {})
    return Stack(
        logs,
        label,
        statuses=statuses,
        customers=customers,
        setup=setup,
        env=service_env,
        code=cfg.code,
    )


WARM_UP_MESSAGES = 64
WARM_UP_CUSTOMERS = range(9_000_000, 9_000_000 + WARM_UP_MESSAGES)


async def warm_up(s: Stack, *, dispatching: bool = True) -> None:
    """A fresh service's first burst pays once for what later ones find ready (each
    database backend plans and compiles the statements, loads the table metadata; 190 ms
    for the first 32 concurrent webhooks here): send one unmeasured burst first, from
    numbers no measured run uses, and let its replies go out."""
    await closed_loop(HOST, s.port, webhooks(s.port, WARM_UP_CUSTOMERS), 32)
    if dispatching:
        await s.wait_idle(WARM_UP_MESSAGES, timeout=30)


def cpu_meter(s: Stack) -> CpuMeter:
    assert s.service is not None and s.fake is not None
    return CpuMeter(
        {"service": s.service.pid, "fake Cloud API": s.fake.pid, "load generator": os.getpid()},
        s.backend_pids,
        with_children=frozenset({"service"}),
    )


# --- phase 1: the ceiling ----------------------------------------------------------------


async def phase_ceiling(cfg: Config, logs: Path) -> dict[str, Any]:
    port = free_port()
    args = ["bench.bare_server", "--port", str(port)]
    bare = Child("bare aiohttp", args, dict(os.environ), logs / "bare.log")
    try:
        await bare.start(f"http://{HOST}:{port}/healthz")
        requests = webhooks(port, range(1_000_000, 1_000_000 + cfg.ceiling_requests))
        await closed_loop(HOST, port, requests[:1_000], cfg.connections)  # warm-up
        meter = CpuMeter({"bare server": bare.pid, "load generator": os.getpid()})
        before = await meter.snapshot()
        result = await closed_loop(HOST, port, requests, cfg.connections)
        cpu = meter.percent(before, await meter.snapshot())
    finally:
        await bare.stop()
    return {"closed": result.summary(), "cpu_percent": cpu}


# --- phase 2: webhook ack ----------------------------------------------------------------


async def phase_ack(cfg: Config, logs: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    customers = range(2_000_000, 2_000_000 + cfg.ack_requests)
    async with stack(cfg, logs, "ack-closed", statuses=cfg.e2e_statuses, customers=customers) as s:
        await warm_up(s)
        requests = webhooks(s.port, customers)
        meter = cpu_meter(s)
        async with s.activity() as activity:
            before = await meter.snapshot()
            result = await closed_loop(HOST, s.port, requests, cfg.connections)
            cpu = meter.percent(before, await meter.snapshot())
        stored, pending, open_ = await s.backlog()
        out["closed"] = result.summary() | {
            "backlog_at_end": {"inbox": stored, "inbox_pending": pending, "outbox_open": open_}
        }
        out["closed_cpu_percent"] = cpu
        out["closed_pg_activity"] = activity.summary

    out["open"], out["open_cpu_percent"], out["open_pg_activity"] = await ack_open_run(
        cfg, logs, "ack-open", range(3_000_000, 3_000_000 + cfg.open_count)
    )
    # Diagnostic: the same offered load with no inbox workers, so the webhook path alone.
    off = await ack_open_run(
        cfg,
        logs,
        "ack-open-no-dispatch",
        range(3_100_000, 3_100_000 + cfg.open_count),
        env={"DISPATCH_CONCURRENCY": "0"},
    )
    out["open_no_dispatch"], out["open_no_dispatch_cpu_percent"], _ = off
    return out


async def ack_open_run(
    cfg: Config, logs: Path, label: str, customers: range, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Offer `cfg.open_rate` messages/s; then give the service `cfg.open_drain_wait`
    seconds to work off what it took in. Returns the run, its CPU and its database
    activity."""
    async with stack(
        cfg, logs, label, statuses=cfg.e2e_statuses, customers=customers, env=env
    ) as s:
        await warm_up(s, dispatching=not env)
        requests = webhooks(s.port, customers)
        meter = cpu_meter(s)
        async with s.activity() as activity:
            before = await meter.snapshot()
            result = await open_loop(HOST, s.port, requests, cfg.open_rate)
            cpu = meter.percent(before, await meter.snapshot())
        _, pending, open_ = await s.backlog()
        drained_in = None
        if not env:
            drained_in = await s.wait_idle(
                len(customers) + WARM_UP_MESSAGES, timeout=cfg.open_drain_wait
            )
        _, pending_after, open_after = await s.backlog()
    summary = result.summary()
    run = summary | {
        "offered_seconds": cfg.open_seconds,
        "service_env": env or {},
        # The acks kept pace: every one a 200, at the offered rate, none left behind.
        "acks_kept_up": result.errors == 0
        and result.rate >= 0.95 * cfg.open_rate
        and summary["drain_after_last_send_ms"] < 1_000,
        "p99_target_met": summary["p99_ms"] <= ACK_P99_TARGET_MS,
        "backlog_at_end": {"inbox_pending": pending, "outbox_open": open_},
        "drain_wait_s": cfg.open_drain_wait if not env else 0.0,
        "processing_drained_after_s": None if drained_in is None else round(drained_in, 2),
        "backlog_after_wait": {"inbox_pending": pending_after, "outbox_open": open_after},
    }
    return run, cpu, activity.summary


# --- phase 3: end to end -----------------------------------------------------------------


async def phase_e2e(cfg: Config, logs: Path) -> dict[str, Any]:
    total = sum(n for _, n in cfg.e2e_runs)
    customers = range(1_000, 1_000 + total)
    out: dict[str, Any] = {"runs": []}
    async with stack(cfg, logs, "e2e", statuses=cfg.e2e_statuses, customers=customers) as s:
        await warm_up(s)
        start = customers.start
        last_seq = 0
        for connections, messages in cfg.e2e_runs:
            batch = range(start, start + messages)
            start += messages
            run, last_seq = await e2e_run(s, batch, connections, last_seq, cfg.e2e_timeout)
            out["runs"].append(run)
    seeded = history(cfg.history_rows) if cfg.history_rows else None
    if seeded is not None:
        # Diagnostic: the headline run again, on a database with some history (the service
        # then prepares its statements on realistic statistics, not on empty tables).
        messages = max(n for c, n in cfg.e2e_runs if c == cfg.connections)
        batch = range(6_000_000, 6_000_000 + messages)
        async with stack(
            cfg, logs, "e2e-history", statuses=cfg.e2e_statuses, customers=batch, setup=seeded
        ) as s:
            await warm_up(s)
            out["history_run"], _ = await e2e_run(s, batch, cfg.connections, 0, cfg.e2e_timeout)
            out["history_run"]["history_rows"] = cfg.history_rows
    if cfg.profile:
        # In a stack of its own, so the measured runs are not disturbed by py-spy and
        # what they left queued does not count here.
        batch = range(5_000_000, 5_000_000 + cfg.profile_messages)
        async with stack(
            cfg, logs, "e2e-profiled", statuses=cfg.e2e_statuses, customers=batch, setup=seeded
        ) as s:
            await warm_up(s)
            out["profiled_run"], _ = await e2e_run(
                s, batch, cfg.connections, 0, cfg.e2e_timeout, profile_dir=logs
            )
            out["profiled_run"]["history_rows"] = cfg.history_rows
    return out


def history(rows: int) -> Setup:
    """Fill a fresh database as if it had been in use: `rows` answered messages from
    rows/4 customers, a delivered reply to each; then ANALYZE."""

    async def seed(pool: asyncpg.Pool) -> None:
        await pool.execute(
            """
            INSERT INTO conversations (key, wa_id, last_inbound_at, updated_at)
            SELECT 'hist' || g, 'hist' || g, now() - interval '2 days', now() - interval '2 days'
            FROM generate_series(1, $1::int / 4) AS g
            """,
            rows,
        )
        # Each customer's phone points at their conversation (migration 012).
        await pool.execute(
            "INSERT INTO conversation_aliases (alias, conversation_id) "
            "SELECT key, id FROM conversations WHERE key LIKE 'hist%'"
        )
        await pool.execute(
            """
            INSERT INTO inbox (wamid, conversation_key, message, status, attempts, processed_at)
            SELECT 'wamid.hist' || g, 'hist' || (1 + g % ($1::int / 4)), '{}'::jsonb, 'done', 1,
                   now() - interval '2 days'
            FROM generate_series(1, $1::int) AS g
            """,
            rows,
        )
        await pool.execute(
            """
            INSERT INTO outbox (recipient, conversation_id, inbox_id, message, status, attempts,
                                sent_as, wamid)
            SELECT c.wa_id, c.id, i.id, '{"kind": "text", "body": "ok"}'::jsonb, 'read', 1,
                   'message', i.wamid || '.reply'
            FROM inbox AS i JOIN conversations AS c ON c.key = i.conversation_key
            """
        )
        await pool.execute("ANALYZE")

    return seed


async def e2e_run(
    s: Stack,
    customers: range,
    connections: int,
    last_seq: int,
    timeout: float,
    *,
    profile_dir: Path | None = None,
) -> tuple[dict[str, Any], int]:
    """Send one message per customer, wait for every reply (up to `timeout` s after the
    last ack), match replies to messages by recipient. Returns the run and the fake's
    last sequence number seen."""
    requests = webhooks(s.port, customers)
    stored_before, _, _ = await s.backlog()
    meter = cpu_meter(s)
    targets = {name: pid for name, pid in meter.processes.items() if name != "load generator"}
    async with contextlib.AsyncExitStack() as scope:
        profiles: dict[str, ProfileSummary | None] = {}
        if profile_dir is not None:
            profiles = await scope.enter_async_context(profiling(targets, profile_dir, "e2e"))
        async with s.activity() as activity:
            before = await meter.snapshot()
            load = await closed_loop(HOST, s.port, requests, connections)
            waited = await s.wait_idle(stored_before + len(customers), timeout)
            cpu = meter.percent(before, await meter.snapshot())
    _, pending, open_ = await s.backlog()

    replies = await s.fake_messages(after=last_seq)
    last_seq = max([last_seq, *(m["seq"] for m in replies)])
    wanted = {bulk_wa_id(c) for c in customers}
    reply_at: dict[str, float] = {}
    reply_count = 0
    for m in replies:
        if m["to"] in wanted:
            reply_count += 1
            # The last reply to a customer is when their message was fully answered.
            reply_at[m["to"]] = max(reply_at.get(m["to"], 0.0), parse_time(m["received_at"]))
    latencies = [
        reply_at[wa_id] - sample.sent_at
        for sample in load.samples
        if (wa_id := bulk_wa_id(customers[sample.index])) in reply_at
    ]
    first_send = min(sample.sent_at for sample in load.samples)
    window = max(reply_at.values(), default=math.nan) - first_send
    run: dict[str, Any] = {
        "connections": connections,
        "messages": len(customers),
        "acked_200": len(load.ok),
        "answered": len(reply_at),
        "replies": reply_count,
        "complete": waited is not None and len(reply_at) == len(customers),
        "timeout_s": timeout,
        "left_at_end": {"inbox_pending": pending, "outbox_open": open_},
        "window_s": round(window, 3),
        "messages_per_s": round(len(reply_at) / window, 1) if window > 0 else 0.0,
        "latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "latency_p90_ms": round(percentile(latencies, 90) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "latency_max_ms": round(percentile(latencies, 100) * 1000, 1),
        "ack": load.summary(),
        "cpu_percent": cpu,
        "pg_activity": activity.summary,
    }
    if profiles:
        run["profiles"] = {k: v.to_json() if v else None for k, v in profiles.items()}
    return run, last_seq


# --- phase 4: outbound drain -------------------------------------------------------------

DRAIN_MESSAGE = {
    "kind": "text",
    "body": "Su factura 1234 vence el 15/12. Puede pagarla desde el panel de cliente.",
    "preview_url": False,
}


async def phase_drain(cfg: Config, logs: Path) -> dict[str, Any]:
    out = await drain_run(cfg, logs, cfg.drain_rows)
    if cfg.profile:
        out["profiled_run"] = await drain_run(
            cfg, logs, cfg.drain_rows, profile_dir=logs, label="drain-profiled"
        )
    return out


async def drain_run(
    cfg: Config, logs: Path, count: int, *, profile_dir: Path | None = None, label: str = "drain"
) -> dict[str, Any]:
    recipients = [bulk_wa_id(c) for c in range(4_000_000, 4_000_000 + count)]

    async def fill_outbox(pool: asyncpg.Pool) -> None:
        # Customers who wrote a minute ago (window open), one queued reply each: what the
        # sender finds after a burst of turns or an alert run.
        await pool.execute(
            """
            WITH c AS (
                INSERT INTO conversations (key, wa_id, profile_name, last_inbound_at)
                SELECT w, w, 'Cliente', now() - interval '1 minute' FROM unnest($1::text[]) AS w
                RETURNING id, wa_id
            )
            INSERT INTO outbox (recipient, conversation_id, purpose, message)
            SELECT c.wa_id, c.id, 'reply', $2::jsonb FROM c ORDER BY c.id
            """,
            recipients,
            DRAIN_MESSAGE,
        )

    async with stack(cfg, logs, label, statuses=cfg.drain_statuses, setup=fill_outbox) as s:
        # The sender starts with the service: by the time it is healthy it is sending.
        meter = cpu_meter(s)
        targets = {n: pid for n, pid in meter.processes.items() if n != "load generator"}
        async with contextlib.AsyncExitStack() as scope:
            profiles: dict[str, ProfileSummary | None] = {}
            if profile_dir is not None:
                profiles = await scope.enter_async_context(profiling(targets, profile_dir, label))
            async with s.activity() as activity:
                before = await meter.snapshot()
                deadline = time.monotonic() + cfg.drain_timeout
                accepted = 0
                while time.monotonic() < deadline:
                    accepted = await s.db.fetchval(
                        "SELECT count(*) FROM outbox WHERE status = 'accepted'"
                    )
                    if accepted >= count:
                        break
                    await asyncio.sleep(0.2)
                all_accepted_at = time.time()
                cpu = meter.percent(before, await meter.snapshot())
        rows = await s.db.fetch("SELECT status, count(*) AS n FROM outbox GROUP BY status")
        times = sorted(parse_time(m["received_at"]) for m in await s.fake_messages())
        stats = await s.fake_stats()
    window = times[-1] - times[0] if len(times) > 1 else math.nan
    out: dict[str, Any] = {
        "rows": count,
        "accepted": accepted,
        "complete": accepted >= count,
        "outbox_by_status": {r["status"]: r["n"] for r in rows},
        "fake_sent": stats["sent"],
        "fake_failed": stats["failed"],
        "first_to_last_send_s": round(window, 3),
        "sends_per_s": round(len(times) / window, 1) if window > 0 else 0.0,
        "spawn_to_first_send_s": round(times[0] - s.spawned_at, 2) if times else None,
        "spawn_to_all_accepted_s": round(all_accepted_at - s.spawned_at, 2),
        "cpu_percent": cpu,
        "pg_activity": activity.summary,
    }
    if profiles:
        out["profiles"] = {k: v.to_json() if v else None for k, v in profiles.items()}
    return out


# --- phase 5: the WHMCS phone index -------------------------------------------------------


async def phase_whmcs_index(cfg: Config, logs: Path) -> dict[str, Any]:
    return await whmcs_index.full_pass(cfg.whmcs_clients, logs, code=cfg.code)


# --- main --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("aiohttp", "asyncpg", "pywa", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
    }


def code_state(root: Path) -> dict[str, Any]:
    """Which code was measured: the commit, and the service files changed since."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip("\n")

    status = git("status", "--porcelain", "--", "bot", "flows", "store", "messages_es")
    changed = [line[3:] for line in status.splitlines()]
    digest = hashlib.sha1()
    for path in changed:
        digest.update(path.encode())
        with contextlib.suppress(OSError):
            digest.update((root / path).read_bytes())
    return {
        "directory": str(root),
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "changed_files": changed,
        # Tells apart two runs on different uncommitted versions of those files.
        "changes_sha1": digest.hexdigest()[:10] if changed else None,
    }


async def run(cfg: Config) -> Report:
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    report = Report(
        started_at=started.isoformat(timespec="seconds"),
        machine=machine_info(),
        code=code_state(cfg.code),
        settings={
            **asdict(cfg),
            "service_env": SERVICE_SETTINGS
            | {"RECIPIENT_INTERVAL_SECONDS": "0.05", "LOG_LEVEL": "WARNING"}
            | dict(cfg.service_env)
            | {"others": "defaults"},
            "postgres": await pg.server_settings(),
            "load_generator": "raw asyncio HTTP/1.1 keep-alive client in the bench process",
        },
    )
    runners = {
        "ceiling": phase_ceiling,
        "ack": phase_ack,
        "e2e": phase_e2e,
        "drain": phase_drain,
        "whmcs_index": phase_whmcs_index,
    }
    for name in cfg.phases:
        t0 = time.monotonic()
        print(f"… {name}", file=sys.stderr, flush=True)
        try:
            report.phases[name] = await runners[name](cfg, logs)
        except Exception as e:
            report.errors.append(f"{name}: {type(e).__name__}: {e}")
            (logs / f"{name}-error.txt").write_text(traceback.format_exc())
            print(f"  {name} failed: {e!r} (traceback in {logs})", file=sys.stderr, flush=True)
        print(f"  {name} took {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    report.code_after = code_state(cfg.code)
    text = markdown(report)
    (RESULTS / f"{stamp}.md").write_text(text)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(asdict(report), indent=2, default=str))
    print(text)
    print(f"written to {RESULTS / stamp}.md and .json (process logs in {logs})", file=sys.stderr)
    return report


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy an extra e2e run")
    parser.add_argument("--quick", action="store_true", help="a tenth of the load (smoke test)")
    parser.add_argument("--e2e-statuses", default=Config.e2e_statuses, choices=("none", "sent"))
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the service in every phase (repeatable), e.g. PROCESSES=2",
    )
    parser.add_argument(
        "--code",
        type=Path,
        default=ROOT,
        metavar="DIR",
        help="run the service and the fake from this checkout (e.g. a `git worktree` of an "
        "older commit, to compare versions in one sitting); the load generator, the database "
        "set-up and its migrations stay this checkout's",
    )
    args = parser.parse_args(argv)
    if not (args.code / "bot" / "__main__.py").exists():
        parser.error(f"--code {args.code}: no bot/__main__.py there")
    service_env: list[tuple[str, str]] = []
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--env wants KEY=VALUE, got {item!r}")
        service_env.append((key, value))
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if args.profile and py_spy_path() is None:
        parser.error("--profile needs py-spy (.venv/bin/pip install py-spy)")
    cfg = Config(
        profile=args.profile,
        phases=phases,
        e2e_statuses=args.e2e_statuses,
        service_env=tuple(service_env),
        code=args.code.resolve(),
    )
    if args.quick:
        cfg = replace(
            cfg,
            ceiling_requests=2_000,
            ack_requests=500,
            open_seconds=2.0,
            e2e_runs=((1, 50), (8, 200), (32, 500)),
            profile_messages=300,
            history_rows=2_000,
            drain_rows=1_000,
            whmcs_clients=5_000,
        )
    return cfg


async def _main(cfg: Config) -> None:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels the run as Ctrl-C does: on the way out every `finally` stops its
    # processes and drops its database.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await run(cfg)


def main(argv: Sequence[str] | None = None) -> None:
    cfg = parse_args(argv)
    try:
        asyncio.run(_main(cfg))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: processes stopped, databases dropped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
