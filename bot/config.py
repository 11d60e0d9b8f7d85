"""Settings read from the environment (SPEC §4); a `.env` file may supply them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Self

from dotenv import load_dotenv

from flows import hours
from flows.hours import BusinessHours


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _business_hours(env: dict[str, str]) -> str:
    text = env.get("BUSINESS_HOURS", "").strip() or hours.DEFAULT
    try:
        BusinessHours.parse(text, env.get("DISPLAY_TIMEZONE") or Settings.display_timezone)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"BUSINESS_HOURS: {e}") from None
    return text


def _choice(env: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip() or allowed[0]
    if raw not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """A positive duration: seconds, or a number with s, m, h or d ("7d", "168h");
    ValueError otherwise."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:])
    seconds = float(raw[:-1] if unit else raw) * (unit or 1)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"not a positive duration: {text!r}")
    return timedelta(seconds=seconds)


def _duration(env: dict[str, str], name: str, default: timedelta) -> timedelta:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    try:
        return parse_duration(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be a positive duration like 7d or 3600, got {raw!r}"
        ) from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path(".data")
    port: int = 8080
    host: str = "0.0.0.0"
    # `serve`: HTTP processes sharing the port, and background processes working the
    # inbox and the outbox. With background processes the HTTP ones do no conversation
    # work, so a webhook is never queued behind a batch of turns (ack latency). With none,
    # each HTTP process does everything.
    processes: int = 1
    worker_processes: int = 1
    # Background processes yield the CPU to the HTTP ones (nice value): acking Meta on
    # time comes first; the backlog is worked off with what is left.
    worker_nice: int = 10
    whatsapp_phone_id: str = ""
    whatsapp_token: str = ""
    whatsapp_app_secret: str = ""
    whatsapp_verify_token: str = ""
    whatsapp_api_url: str = "https://graph.facebook.com"
    whatsapp_api_version: str = "23.0"
    events_secret: str = ""
    # Events older than this are refused (422): longer than any retry of the forwarder,
    # and no replay of a captured event once its id is purged.
    events_max_age: timedelta = timedelta(days=7)
    # An upgrade's invoice unpaid this long is voided and the customer told the quote
    # expired; the check runs every UPKEEP_SECONDS.
    upgrade_invoice_ttl: timedelta = timedelta(days=7)
    upkeep_seconds: float = 300.0
    # How long one holder's transfer message waits for the other holder's.
    transfer_window: timedelta = timedelta(hours=72)
    billing_backend: str = "local"
    whmcs_url: str = ""
    whmcs_identifier: str = ""
    whmcs_secret: str = ""
    whmcs_access_key: str = ""
    whmcs_timeout_seconds: float = 15.0
    # WHMCS's API does not expose upgrade paths: they are read from this file.
    whmcs_upgrades_file: Path = Path("config/whmcs_upgrades.toml")
    # Which WHMCS field says a client is verified (bot/whmcs/mapping.py, VerifiedRule).
    whmcs_verified: str = "email_verified"
    # Upgrade pricing: "difference" (the help page's rule) or "prorata" (WHMCS's method).
    upgrade_pricing: str = "difference"
    # The customer panel (invoice links of the local backend).
    panel_url: str = "https://www.paneldecliente.com"
    # Where an unidentified customer is sent to fix the phone on their account.
    panel_details_url: str = "https://www.paneldecliente.com/clientarea.php?action=details"
    # The public plans and prices, where a prospect asking to buy is sent ("" = the
    # panel's store, PANEL_URL/cart.php).
    plans_url: str = ""
    # Region used to read account phones written without a country code.
    default_region: str = "AR"
    # Local time for anything shown to a customer.
    display_timezone: str = "America/Argentina/Buenos_Aires"
    # When people answer the staff queue, in display_timezone (flows/hours.py).
    business_hours_text: str = hours.DEFAULT
    # A conversation idle this long starts again from the menu.
    session_ttl_minutes: int = 30
    # Cloud API throughput: 80 msg/s per number by default, up to 1,000 once upgraded.
    send_rate_per_second: float = 80.0
    # WhatsApp's pair limit: about one message every 6 s to one user, short bursts allowed.
    recipient_interval_seconds: float = 6.0
    recipient_burst: int = 20
    send_concurrency: int = 64
    send_max_attempts: int = 8
    send_timeout_seconds: float = 20.0
    # A send whose outcome is unknown (the process died or timed out after the request
    # left) is re-sent only if no status webhook has told us about it after this long.
    ambiguous_after_seconds: float = 300.0
    # Sending paused (the account or our credentials cannot send): the first probe of the
    # number after this long, then doubling up to 5 minutes.
    send_probe_seconds: float = 30.0
    # Inbox workers per process. Few is enough when the billing system answers fast:
    # more only compete with the webhook for the CPU (measured: ack p99 36 ms with 2, 87
    # ms with 8, at equal throughput). Raise it when billing calls are slow.
    dispatch_concurrency: int = 2
    # Messages (of distinct conversations) a worker handles in one transaction.
    dispatch_batch: int = 32
    # Flow steps of a batch running at once (each may wait on the billing system).
    dispatch_batch_readers: int = 8
    # An idle worker is woken by NOTIFY; it also looks on its own this often, for work a
    # lost notification or a retry's delay left waiting.
    dispatch_idle_seconds: float = 5.0
    inbox_max_attempts: int = 3
    # Billing commands (bot/commands.py): calls in flight at once per process; attempts
    # while the billing system is unreachable before the customer is told; and how long
    # a running command's heartbeat may be silent before its worker is presumed dead and
    # another asks again with the same request id. Longer than any pause of a live one.
    command_concurrency: int = 8
    command_max_attempts: int = 6
    command_stalled_seconds: float = 60.0
    webhook_max_bytes: int = 3 * 1024 * 1024
    # The staff console: the key signing its cookies (unset: one made at first start and
    # kept in the database, shared by every process), how long a login lasts, and how
    # many wrong passwords in a row lock an account for how long.
    staff_secret: str = ""
    staff_session_hours: int = 12
    staff_lockout_attempts: int = 5
    staff_lockout_minutes: int = 15
    log_level: str = "INFO"
    log_json: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, dotenv: bool = True) -> Self:
        if env is None:
            if dotenv:
                load_dotenv(override=False)
            env = dict(os.environ)
        backend = env.get("BILLING_BACKEND", "local").strip() or "local"
        if backend not in ("local", "whmcs"):
            raise ConfigError(f"BILLING_BACKEND must be 'local' or 'whmcs', got {backend!r}")
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            data_dir=Path(env.get("DATA_DIR") or ".data"),
            port=_int(env, "PORT", 8080),
            host=env.get("HOST", "0.0.0.0"),
            processes=max(1, _int(env, "PROCESSES", 1)),
            worker_processes=max(0, _int(env, "WORKER_PROCESSES", 1)),
            worker_nice=min(19, max(0, _int(env, "WORKER_NICE", 10))),
            whatsapp_phone_id=env.get("WHATSAPP_PHONE_ID", ""),
            whatsapp_token=env.get("WHATSAPP_TOKEN", ""),
            whatsapp_app_secret=env.get("WHATSAPP_APP_SECRET", ""),
            whatsapp_verify_token=env.get("WHATSAPP_VERIFY_TOKEN", ""),
            whatsapp_api_url=(env.get("WHATSAPP_API_URL") or "https://graph.facebook.com").rstrip(
                "/"
            ),
            whatsapp_api_version=env.get("WHATSAPP_API_VERSION", "23.0"),
            events_secret=env.get("EVENTS_SECRET", ""),
            events_max_age=_duration(env, "EVENTS_MAX_AGE", timedelta(days=7)),
            upgrade_invoice_ttl=_duration(env, "UPGRADE_INVOICE_TTL", timedelta(days=7)),
            upkeep_seconds=max(1.0, _float(env, "UPKEEP_SECONDS", 300.0)),
            transfer_window=_duration(env, "TRANSFER_WINDOW", timedelta(hours=72)),
            billing_backend=backend,
            whmcs_url=env.get("WHMCS_URL", ""),
            whmcs_identifier=env.get("WHMCS_IDENTIFIER", ""),
            whmcs_secret=env.get("WHMCS_SECRET", ""),
            whmcs_access_key=env.get("WHMCS_ACCESS_KEY", ""),
            whmcs_timeout_seconds=_float(env, "WHMCS_TIMEOUT_SECONDS", 15.0),
            whmcs_upgrades_file=Path(
                env.get("WHMCS_UPGRADES_FILE") or "config/whmcs_upgrades.toml"
            ),
            whmcs_verified=env.get("WHMCS_VERIFIED", "email_verified").strip() or "email_verified",
            upgrade_pricing=_choice(env, "UPGRADE_PRICING", ("difference", "prorata")),
            panel_url=(env.get("PANEL_URL") or cls.panel_url).rstrip("/"),
            panel_details_url=env.get("PANEL_DETAILS_URL", cls.panel_details_url),
            plans_url=env.get("PLANS_URL", ""),
            default_region=env.get("DEFAULT_REGION", "AR"),
            display_timezone=env.get("DISPLAY_TIMEZONE", cls.display_timezone),
            business_hours_text=_business_hours(env),
            session_ttl_minutes=_int(env, "SESSION_TTL_MINUTES", 30),
            send_rate_per_second=_float(env, "SEND_RATE_PER_SECOND", 80.0),
            recipient_interval_seconds=_float(env, "RECIPIENT_INTERVAL_SECONDS", 6.0),
            recipient_burst=_int(env, "RECIPIENT_BURST", 20),
            send_concurrency=_int(env, "SEND_CONCURRENCY", 64),
            send_max_attempts=_int(env, "SEND_MAX_ATTEMPTS", 8),
            send_timeout_seconds=_float(env, "SEND_TIMEOUT_SECONDS", 20.0),
            ambiguous_after_seconds=_float(env, "AMBIGUOUS_AFTER_SECONDS", 300.0),
            send_probe_seconds=max(0.1, _float(env, "SEND_PROBE_SECONDS", 30.0)),
            dispatch_concurrency=_int(env, "DISPATCH_CONCURRENCY", 2),
            dispatch_batch=max(1, _int(env, "DISPATCH_BATCH", 32)),
            dispatch_batch_readers=max(1, _int(env, "DISPATCH_BATCH_READERS", 8)),
            dispatch_idle_seconds=max(0.1, _float(env, "DISPATCH_IDLE_SECONDS", 5.0)),
            inbox_max_attempts=_int(env, "INBOX_MAX_ATTEMPTS", 3),
            command_concurrency=max(1, _int(env, "COMMAND_CONCURRENCY", 8)),
            command_max_attempts=max(1, _int(env, "COMMAND_MAX_ATTEMPTS", 6)),
            command_stalled_seconds=max(1.0, _float(env, "COMMAND_STALLED_SECONDS", 60.0)),
            webhook_max_bytes=_int(env, "WEBHOOK_MAX_BYTES", 3 * 1024 * 1024),
            staff_secret=env.get("STAFF_SECRET", "").strip(),
            staff_session_hours=max(1, _int(env, "STAFF_SESSION_HOURS", 12)),
            staff_lockout_attempts=max(1, _int(env, "STAFF_LOCKOUT_ATTEMPTS", 5)),
            staff_lockout_minutes=max(1, _int(env, "STAFF_LOCKOUT_MINUTES", 15)),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            log_json=env.get("LOG_FORMAT", "json").lower() != "text",
        )

    @property
    def business_hours(self) -> BusinessHours:
        return BusinessHours.parse(self.business_hours_text, self.display_timezone)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
