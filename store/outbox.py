"""The sender's SQL: claim sendable rows within the global budget and per-person
pacing, then record each outcome.

Both limits are token buckets kept in PostgreSQL, so several processes together respect
them: the number-wide budget (80 msg/s by default) in the single `send_budget` row, and
WhatsApp's pair limit (about one message every 6 s to one user, short bursts allowed) in
`recipient_pacing`, one bucket per person (`outbox.pace_key`, migration 012).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store.db import Conn


@dataclass(frozen=True, slots=True)
class Pacing:
    rate_per_second: float
    recipient_interval_seconds: float
    recipient_burst: int


@dataclass(frozen=True, slots=True)
class ClaimedSend:
    id: int
    recipient: str
    # Whose bucket paces it: the person (their conversation), whatever address (phone or
    # BSUID) this message goes to.
    pace_key: str
    message: dict[str, Any]
    template: dict[str, Any] | None
    attempts: int  # including this one
    force_template: bool
    last_inbound_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    sends: list[ClaimedSend]
    # Seconds until the global budget has a token again (0 when it was not the limit).
    budget_wait: float
    # Sending is paused (the account or our credentials cannot send): nothing claimed.
    paused: bool = False


async def claim(conn: Conn, limit: int, pacing: Pacing) -> Claim:
    """Claim up to `limit` rows: each the oldest open row of its recipient, due, with the
    recipient's bucket holding a token. They become `sending` when this commits."""
    async with conn.transaction():
        budget = await conn.fetchrow(
            """
            UPDATE send_budget SET
                tokens = least($1::float8, tokens
                    + extract(epoch FROM clock_timestamp() - updated_at) * $1::float8),
                updated_at = clock_timestamp()
            WHERE id = 1
            RETURNING tokens, paused_at IS NOT NULL AS paused
            """,
            pacing.rate_per_second,
        )
        assert budget is not None
        if budget["paused"]:
            return Claim([], 0.0, paused=True)
        tokens = budget["tokens"]
        allowed = min(limit, int(tokens))
        if allowed < 1:
            return Claim([], (1 - float(tokens)) / pacing.rate_per_second)
        rows = await conn.fetch(
            "SELECT * FROM claim_outbox($1, $2, $3)",
            allowed,
            float(pacing.recipient_burst),
            pacing.recipient_interval_seconds,
        )
        if not rows:
            return Claim([], 0.0)
        ids = [r["id"] for r in rows]
        await conn.execute(
            """
            UPDATE outbox SET status = 'sending', claimed_at = now(),
                attempts = attempts + 1, updated_at = now()
            WHERE id = ANY($1::bigint[])
            """,
            ids,
        )
        await conn.execute(
            """
            INSERT INTO recipient_pacing AS p (recipient, tokens, updated_at)
            SELECT r, $2::float8 - 1, now() FROM unnest($1::text[]) AS r
            ON CONFLICT (recipient) DO UPDATE SET
                tokens = least($2::float8, p.tokens
                    + extract(epoch FROM now() - p.updated_at) / $3::float8) - 1,
                updated_at = now()
            """,
            [r["pace_key"] for r in rows],
            float(pacing.recipient_burst),
            pacing.recipient_interval_seconds,
        )
        await conn.execute("UPDATE send_budget SET tokens = tokens - $1 WHERE id = 1", len(rows))
    return Claim(
        [
            ClaimedSend(
                id=r["id"],
                recipient=r["recipient"],
                pace_key=r["pace_key"],
                message=r["message"],
                template=r["template"],
                attempts=r["attempts"],
                force_template=r["force_template"],
                last_inbound_at=r["last_inbound_at"],
            )
            for r in rows
        ],
        0.0,
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    id: int
    wamid: str
    sent_as: str


@dataclass(frozen=True, slots=True)
class Retry:
    id: int
    delay_seconds: float
    error_code: int | None
    error_message: str
    as_template: bool = False
    # Not the message's fault (sending was paused): the attempt is given back.
    keep_attempt: bool = False


@dataclass(frozen=True, slots=True)
class Failed:
    id: int
    error_code: int | None
    error_message: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """The request may have reached Meta (timeout, dropped connection): leave the row
    `sending`; a status webhook will settle it, or the sweeper after a long silence."""

    id: int
    error_message: str


Outcome = Accepted | Retry | Failed | Unknown


async def record(conn: Conn, outcomes: Sequence[Outcome]) -> None:
    """Write a batch of send outcomes. Only rows still `sending` are touched by a retry or
    failure; an acceptance never moves a row back (a status webhook may have come first),
    nor marks a row a failed status has queued again."""
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    retries = [o for o in outcomes if isinstance(o, Retry)]
    failed = [o for o in outcomes if isinstance(o, Failed)]
    unknown = [o for o in outcomes if isinstance(o, Unknown)]
    async with conn.transaction():
        if accepted:
            await conn.execute(
                """
                UPDATE outbox AS o SET
                    status = CASE WHEN outbox_status_rank(o.status) < 2 THEN 'accepted'
                                  ELSE o.status END,
                    wamid = a.w, sent_as = a.s, accepted_at = now(), updated_at = now()
                FROM unnest($1::bigint[], $2::text[], $3::text[]) AS a(id, w, s)
                WHERE o.id = a.id
                  -- Queued again meanwhile: a `failed` status for this very send came
                  -- before its acceptance was written (Meta is that fast); the next
                  -- attempt's acceptance is the one to record.
                  AND o.status <> 'pending'
                """,
                [a.id for a in accepted],
                [a.wamid for a in accepted],
                [a.sent_as for a in accepted],
            )
        if retries:
            await conn.execute(
                """
                UPDATE outbox AS o SET status = 'pending',
                    not_before = now() + make_interval(secs => r.d),
                    error_code = r.c, error_message = r.m,
                    attempts = o.attempts - CASE WHEN r.k THEN 1 ELSE 0 END,
                    force_template = o.force_template OR r.t, updated_at = now()
                FROM unnest($1::bigint[], $2::float8[], $3::int[], $4::text[], $5::bool[],
                            $6::bool[]) AS r(id, d, c, m, t, k)
                WHERE o.id = r.id AND o.status = 'sending'
                """,
                [r.id for r in retries],
                [r.delay_seconds for r in retries],
                [r.error_code for r in retries],
                [r.error_message[:1000] for r in retries],
                [r.as_template for r in retries],
                [r.keep_attempt for r in retries],
            )
        if failed:
            await conn.execute(
                """
                UPDATE outbox AS o SET status = 'failed', error_code = f.c, error_message = f.m,
                    updated_at = now()
                FROM unnest($1::bigint[], $2::int[], $3::text[]) AS f(id, c, m)
                WHERE o.id = f.id AND o.status = 'sending'
                """,
                [f.id for f in failed],
                [f.error_code for f in failed],
                [f.error_message[:1000] for f in failed],
            )
        if unknown:
            await conn.execute(
                """
                UPDATE outbox AS o SET error_message = u.m, updated_at = now()
                FROM unnest($1::bigint[], $2::text[]) AS u(id, m)
                WHERE o.id = u.id AND o.status = 'sending'
                """,
                [u.id for u in unknown],
                [u.error_message[:1000] for u in unknown],
            )


async def block_recipient(conn: Conn, pace_key: str, seconds: float) -> None:
    """WhatsApp said we hit the pair limit for this user (131056): pause them only
    (`pace_key`: ClaimedSend.pace_key)."""
    await conn.execute(
        """
        INSERT INTO recipient_pacing AS p (recipient, tokens, updated_at, blocked_until)
        VALUES ($1, 0, now(), now() + make_interval(secs => $2))
        ON CONFLICT (recipient) DO UPDATE SET tokens = 0, updated_at = now(),
            blocked_until = now() + make_interval(secs => $2)
        """,
        pace_key,
        seconds,
    )


async def drain_budget(conn: Conn) -> None:
    """WhatsApp said the number's throughput was exceeded (130429): empty the bucket."""
    await conn.execute("UPDATE send_budget SET tokens = 0, updated_at = now() WHERE id = 1")


@dataclass(frozen=True, slots=True)
class Pause:
    since: datetime
    code: int | None
    reason: str
    probe_at: datetime | None
    probes: int  # probes that failed since it paused


async def pause_sending(conn: Conn, code: int | None, reason: str, probe_in: float) -> bool:
    """Stop every process's sending until `resume_sending`. True when this paused it (it
    was running); when already paused, the first pause's time and probe plan stay."""
    paused = await conn.fetchval(
        """
        UPDATE send_budget SET paused_at = now(), paused_code = $1, paused_reason = $2,
            probe_at = now() + make_interval(secs => $3), probes = 0
        WHERE id = 1 AND paused_at IS NULL
        RETURNING true
        """,
        code,
        reason[:1000],
        probe_in,
    )
    return bool(paused)


async def sending_pause(conn: Conn) -> Pause | None:
    row = await conn.fetchrow(
        "SELECT paused_at, paused_code, paused_reason, probe_at, probes FROM send_budget"
        " WHERE id = 1 AND paused_at IS NOT NULL"
    )
    if row is None:
        return None
    return Pause(
        row["paused_at"], row["paused_code"], row["paused_reason"] or "", row["probe_at"],
        row["probes"],
    )  # fmt: skip


async def probe_failed(conn: Conn, next_in: float, reason: str) -> None:
    await conn.execute(
        """
        UPDATE send_budget SET probe_at = now() + make_interval(secs => $1),
            probes = probes + 1, paused_reason = $2
        WHERE id = 1 AND paused_at IS NOT NULL
        """,
        next_in,
        reason[:1000],
    )


async def resume_sending(conn: Conn) -> bool:
    """Sending goes on; True when it was paused."""
    resumed = await conn.fetchval(
        """
        UPDATE send_budget SET paused_at = NULL, paused_code = NULL, paused_reason = NULL,
            probe_at = NULL, probes = 0
        WHERE id = 1 AND paused_at IS NOT NULL
        RETURNING true
        """
    )
    return bool(resumed)


async def release_ambiguous(conn: Conn, older_than_seconds: float) -> int:
    """Rows left `sending` with no status webhook for a long time: the process that
    claimed them died, or the request timed out and Meta never heard of it (it reports
    every message it accepts). Only then are they sent again."""
    rows = await conn.fetch(
        """
        UPDATE outbox SET status = 'pending', not_before = now(), updated_at = now(),
            error_message = 'no answer nor status webhook; sending again'
        WHERE status = 'sending' AND claimed_at < now() - make_interval(secs => $1)
        RETURNING id
        """,
        older_than_seconds,
    )
    return len(rows)


async def counts_by_status(conn: Conn) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM outbox GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}
