"""`python -m bot serve`: the production entry point.

By default it runs two processes under a small supervisor: one serves HTTP (webhooks,
status webhooks, `/healthz`, `/metrics`) and one works the inbox and the outbox (the
dispatcher and the sender). Kept apart, a webhook is answered at once instead of waiting
behind a batch of turns on the same event loop, and the two use two cores.

`PROCESSES=N` starts N HTTP processes sharing the port (SO_REUSEPORT: the kernel spreads
connections); `WORKER_PROCESSES=M` starts M background processes (row locks and SKIP
LOCKED share the work, exactly as separate machines do). `WORKER_PROCESSES=0` with
`PROCESSES=1` is a single process doing everything. Background processes run at a lower
CPU priority (`WORKER_NICE`, default 10): when the machine is busy, answering Meta's
webhooks comes first and the backlog is worked off with the CPU that is left.

The supervisor resolves the database (starting the embedded one if needed) and applies
migrations once, then watches: a child that dies is restarted; SIGTERM or SIGINT stops
them all; if the supervisor itself is killed, the kernel kills its children
(PR_SET_PDEATHSIG), so nothing keeps running or holds the port.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Literal

import uvloop
from aiohttp import web

from bot import logs, metrics
from bot.config import Settings

log = logging.getLogger(__name__)

RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
PR_SET_PDEATHSIG = 1

Role = Literal["all", "web", "worker"]


def serve(settings: Settings) -> int:
    if settings.processes <= 1 and settings.worker_processes == 0:
        _run_child(settings, "all")
        return 0
    settings = asyncio.run(_prepare_database(settings))
    return _supervise(settings)


async def _prepare_database(settings: Settings) -> Settings:
    from bot.app import open_pool
    from store import db

    dsn = await asyncio.to_thread(db.resolve_database_url, settings.database_url, settings.data_dir)
    settings = replace(settings, database_url=dsn)
    pool = await open_pool(settings, size=2)  # applies the migrations; then closed
    await pool.close()
    return settings


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the supervisor dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)


def _run_child(settings: Settings, role: Role, parent: int | None = None) -> None:
    from bot.app import build_app

    if parent is not None:
        _die_with_parent(parent)
    logs.setup(settings.log_level, as_json=settings.log_json)
    # uvloop's event loop (libuv) costs a fraction of asyncio's own per I/O event; the
    # service is mostly I/O events (webhooks, PostgreSQL, the Cloud API).
    uvloop.install()
    if role == "worker":
        if settings.worker_nice:
            os.nice(settings.worker_nice)
        asyncio.run(_background(settings))
        return
    web.run_app(
        build_app(settings, workers=role == "all"),
        host=settings.host,
        port=settings.port,
        reuse_port=settings.processes > 1,
        print=None,
        access_log=None,
    )


async def _background(settings: Settings) -> None:
    """The dispatcher and the sender without an HTTP server, until SIGTERM/SIGINT."""
    from bot.app import build_app

    runner = web.AppRunner(build_app(settings, workers=True, http=False))
    await runner.setup()  # starts the pool, the listener, the dispatcher and the sender
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _metrics_dir() -> tuple[Path, bool]:
    """Where the children keep their counters (bot/metrics.py), and whether it is ours
    to remove at exit: PROMETHEUS_MULTIPROC_DIR if set, else a new temporary directory."""
    given = os.environ.get(metrics.MULTIPROC_ENV)
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="bot-metrics-"))
    metrics.reset_multiprocess_dir(directory)
    os.environ[metrics.MULTIPROC_ENV] = str(directory)  # inherited by every child
    return directory, not given


def _supervise(settings: Settings) -> int:
    directory, temporary = _metrics_dir()
    try:
        return _watch_children(settings)
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def _watch_children(settings: Settings) -> int:
    context = multiprocessing.get_context("spawn")
    web_roles: list[Role] = ["web"] * settings.processes
    worker_roles: list[Role] = ["worker"] * settings.worker_processes
    roles = web_roles + worker_roles
    children: list[BaseProcess] = []
    restarts = [0] * len(roles)
    stopping = False
    me = os.getpid()

    def start(slot: int) -> BaseProcess:
        role = roles[slot]
        proc = context.Process(
            target=_run_child, args=(settings, role, me), name=f"bot-{role}-{slot}"
        )
        proc.start()
        log.info("%s process %d started (pid %s)", role, slot, proc.pid)
        return proc

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in children:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children.extend(start(slot) for slot in range(len(roles)))
    while not stopping:
        time.sleep(0.5)
        for slot, proc in enumerate(children):
            if stopping or proc.is_alive():
                continue
            delay = RESTART_BACKOFF_SECONDS[min(restarts[slot], len(RESTART_BACKOFF_SECONDS) - 1)]
            log.error(
                "%s process %d exited with %s; restarting in %.0f s",
                roles[slot],
                slot,
                proc.exitcode,
                delay,
            )
            time.sleep(delay)
            restarts[slot] += 1
            children[slot] = start(slot)
    for proc in children:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    return 0
