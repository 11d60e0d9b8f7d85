"""`python -m bot sandbox`: the service, the fake Cloud API and the phone simulator,
started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from bot.app import build_app
from bot.config import Settings
from bot.console.auth import hash_password
from bot.fakes.cloud_api import FakeCloudAPI
from bot.sandbox.phone import Simulator, add_simulator
from bot.serving import serve
from bot.webhook import POOL
from store import staff

log = logging.getLogger(__name__)

DEMO_BILLING = Path(__file__).resolve().parent / "demo_billing.json"
# The staff console's demo team (the demo clients' account managers and an admin) and
# canned replies; their password is made at every start and shown in the banner.
DEMO_TEAM = Path(__file__).resolve().parent / "demo_team.json"
HOST = "127.0.0.1"
# The fake's status webhooks come this long apart, so the ticks visibly move.
STATUS_DELAY_SECONDS = 0.4
SANDBOX_PHONE_ID = "100000000000001"
# The fake's status webhooks come this long apart, so the ticks visibly move.


def sandbox_settings(settings: Settings) -> Settings:
    """`settings` made self-contained: secrets generated where unset, local billing, and
    per-recipient pacing relaxed (the fake does not enforce WhatsApp's pair limit, and a
    person trying the bot should not wait 6 s between answers)."""
    return settings.with_(
        whatsapp_phone_id=settings.whatsapp_phone_id or SANDBOX_PHONE_ID,
        whatsapp_token=settings.whatsapp_token or secrets.token_urlsafe(24),
        whatsapp_app_secret=settings.whatsapp_app_secret or secrets.token_hex(16),
        whatsapp_verify_token=settings.whatsapp_verify_token or secrets.token_urlsafe(16),
        events_secret=settings.events_secret or secrets.token_hex(16),
        billing_backend="local",
        recipient_interval_seconds=min(settings.recipient_interval_seconds, 0.25),
        recipient_burst=max(settings.recipient_burst, 50),
    )


def load_demo_billing(path: Path = DEMO_BILLING) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


class Sandbox:
    """The service, the fake Cloud API and the simulator, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int,
        host: str = HOST,
        demo: dict[str, Any] | None = None,
    ) -> None:
        self.settings = sandbox_settings(settings)
        self.host = host
        self.port = port
        self.demo = load_demo_billing() if demo is None else demo
        self.fake = FakeCloudAPI(
            phone_id=self.settings.whatsapp_phone_id,
            token=self.settings.whatsapp_token,
            app_secret=self.settings.whatsapp_app_secret,
            statuses=("sent", "delivered", "read"),
            status_delay=STATUS_DELAY_SECONDS,
        )
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.staff_password = secrets.token_urlsafe(9)
        self.staff_usernames: list[str] = []

    async def start(self) -> Self:
        api_url = await self.fake.start(self.host, 0)
        try:
            self.settings = self.settings.with_(whatsapp_api_url=api_url)
            if self.port:
                self.fake.webhook_url = f"http://{self.host}:{self.port}/webhook"
            app = build_app(self.settings)
            add_simulator(app, Simulator(self.fake, self.settings, self.demo))
            self._runner, self.url = await serve(app, self.host, self.port, shutdown_timeout=5.0)
            await self._demo_team(app[POOL])
        except BaseException:
            await self.stop()
            raise
        self.fake.webhook_url = f"{self.url}/webhook"
        return self

    async def _demo_team(self, pool: asyncpg.Pool) -> None:
        team = json.loads(DEMO_TEAM.read_text(encoding="utf-8"))
        password_hash = await asyncio.to_thread(hash_password, self.staff_password)
        async with pool.acquire() as conn, conn.transaction():
            admin_id = 0
            for member in team["staff"]:
                staff_id = await staff.reset_staff(
                    conn, member["username"], member["role"], password_hash
                )
                admin_id = admin_id or (staff_id if member["role"] == "admin" else 0)
            existing = {c.code for c in await staff.canned_replies(conn)}
            for canned in team["canned_replies"]:
                if canned["code"] not in existing:
                    await staff.save_canned_reply(conn, canned["code"], canned["body"], admin_id)
        self.staff_usernames = [m["username"] for m in team["staff"]]

    async def stop(self) -> None:
        # The service first: its sender may still be talking to the fake.
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.fake.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def urls(self) -> dict[str, str]:
        return {
            "sandbox": f"{self.url}/sandbox/",
            "staff": f"{self.url}/staff/",
            "webhook": f"{self.url}/webhook",
            "fake_api": self.fake.base_url,
            "fake_messages": f"{self.fake.base_url}/_fake/messages",
            "healthz": f"{self.url}/healthz",
            "metrics": f"{self.url}/metrics",
        }

    def banner(self) -> str:
        urls = self.urls()
        return "\n".join(
            [
                "WhatsApp bot sandbox is running.",
                f"  Phone simulator:  {urls['sandbox']}",
                f"  Staff console:    {urls['staff']}  (users {', '.join(self.staff_usernames)};"
                f" password {self.staff_password})",
                f"  Webhook:          {urls['webhook']}",
                f"  Fake Cloud API:   {urls['fake_api']}  (sent: {urls['fake_messages']})",
                f"  Health:           {urls['healthz']}",
                f"  Metrics:          {urls['metrics']}",
                f"  Database:         {_database_label(self.settings)}",
                "Press Ctrl-C to stop.",
            ]
        )


def _database_label(settings: Settings) -> str:
    if settings.database_url is None:
        return f"embedded PostgreSQL in {(settings.data_dir / 'postgres').resolve()}"
    # Never print the DSN itself: it may carry a password.
    parts = urlsplit(settings.database_url)
    return f"DATABASE_URL ({parts.hostname or 'local socket'}{parts.path})"


def run_sandbox(settings: Settings, port: int | None = None) -> int:
    """Serve the sandbox until Ctrl-C or SIGTERM; the process exit code."""
    try:
        return asyncio.run(_serve(settings, settings.port if port is None else port))
    except KeyboardInterrupt:
        return 130


async def _serve(settings: Settings, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    sandbox = Sandbox(settings, port=port)
    try:
        await sandbox.start()
    except OSError as e:
        # A port in use or a database that cannot be reached: the message says it all.
        print(f"cannot start the sandbox: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:
        log.exception("the sandbox could not start")
        print(f"cannot start the sandbox: {e}", file=sys.stderr, flush=True)
        return 1
    print(sandbox.banner(), flush=True)
    await stop.wait()
    print("stopping", flush=True)
    await sandbox.stop()
    print("stopped", flush=True)
    return 0
