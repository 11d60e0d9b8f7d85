"""The escalation queue's SQL (migration 018): items staff work, in Chatwoot's vocabulary.

An item is one reason a conversation needs a person (a customer asking for one, the bot
not understanding, a flow's task). It is `pending` until someone claims it (`open`),
`snoozed` until a time or the customer's next message, and `resolved` at the end. Several
items may stand for one conversation, one per reason (or per flow key). Every staff
action is a row in escalation_actions: who, what, when.

While a person talks with a customer the conversation's flow state is
HANDED_OVER and the bot stays silent; resolving the last item a person was talking in
hands it back (the caller then tells the customer)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from flows.menu import CUSTOMER_REQUEST, HANDED_BACK, HANDED_OVER
from store.db import Conn
from store.inbox import without_nul

PRIORITIES = ("low", "normal", "high", "urgent")
View = Literal["mine", "unassigned", "all", "snoozed", "resolved"]
VIEWS: tuple[View, ...] = ("mine", "unassigned", "all", "snoozed", "resolved")

# An item's status as it stands now: a snooze whose time has passed is over already,
# before the upkeep chore writes it back.
_EFFECTIVE_STATUS = """
    CASE WHEN e.status = 'snoozed' AND e.snoozed_until <= now()
         THEN CASE WHEN e.assigned_to IS NULL THEN 'pending' ELSE 'open' END
         ELSE e.status END
"""
_ITEM_COLUMNS = f"""
    e.id, e.conversation_id, e.client_id, e.reason, e.detail, e.key, e.priority,
    {_EFFECTIVE_STATUS} AS status, e.assigned_to, s.username AS assignee,
    e.snoozed_until, e.waiting_since, e.first_reply_at, e.resolved_at, e.created_at,
    e.updated_at, c.wa_id, c.user_id, c.profile_name, c.flow_state, c.last_inbound_at
"""
_ITEM_FROM = """
    FROM escalations AS e
    JOIN conversations AS c ON c.id = e.conversation_id
    LEFT JOIN staff AS s ON s.id = e.assigned_to
"""
_PRIORITY_ORDER = "array_position(ARRAY['urgent','high','normal','low'], e.priority)"


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    conversation_id: int
    client_id: str | None
    reason: str
    detail: dict[str, Any]
    key: str | None
    priority: str
    status: str
    assigned_to: int | None
    assignee: str | None
    snoozed_until: datetime | None
    waiting_since: datetime | None
    first_reply_at: datetime | None
    resolved_at: datetime | None
    created_at: datetime
    updated_at: datetime
    wa_id: str | None
    user_id: str | None
    profile_name: str | None
    flow_state: str
    last_inbound_at: datetime | None


@dataclass(frozen=True, slots=True)
class Action:
    id: int
    escalation_id: int
    staff: str | None  # None: the customer or the bot
    action: str
    detail: dict[str, Any]
    at: datetime


def _item(row: asyncpg.Record) -> Item:
    return Item(**{name: row[name] for name in Item.__slots__})


# -- items appear ---------------------------------------------------------------------


async def escalate(
    conn: Conn,
    conversation_id: int,
    client_id: str | None,
    reason: str,
    detail: Mapping[str, Any],
    *,
    key: str | None = None,
    priority: str = "normal",
    account_manager: str | None = None,
) -> None:
    """Open an item. Without a key, one unresolved item per conversation and reason (a
    customer asking twice for a person is one request: the second wakes it and keeps it
    waiting); with a key, one per key (a flow's task about one thing), however often
    asked. The client's account manager, when they have a staff account, gets it."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}")
    detail_json = without_nul(dict(detail))
    if key is None:
        await conn.execute(
            """
            INSERT INTO escalations AS e
                (conversation_id, client_id, reason, detail, priority, assigned_to)
            VALUES ($1, $2, $3, $4, $5,
                    (SELECT id FROM staff WHERE lower(username) = lower($6) AND active))
            ON CONFLICT (conversation_id, reason) WHERE status <> 'resolved' AND key IS NULL
            DO UPDATE SET updated_at = now(),
                waiting_since = coalesce(e.waiting_since, now()),
                status = CASE WHEN e.status = 'snoozed'
                    THEN CASE WHEN e.assigned_to IS NULL THEN 'pending' ELSE 'open' END
                    ELSE e.status END,
                snoozed_until = NULL
            """,
            conversation_id,
            client_id,
            reason,
            detail_json,
            priority,
            account_manager,
        )
    else:
        await conn.execute(
            """
            INSERT INTO escalations
                (conversation_id, client_id, reason, detail, key, priority, assigned_to)
            VALUES ($1, $2, $3, $4, $7, $5,
                    (SELECT id FROM staff WHERE lower(username) = lower($6) AND active))
            ON CONFLICT (key) DO NOTHING
            """,
            conversation_id,
            client_id,
            reason,
            detail_json,
            priority,
            account_manager,
            key,
        )


async def customers_wrote(conn: Conn, conversation_ids: Sequence[int]) -> None:
    """Customers wrote in these conversations: their snoozed items wake, and they wait
    for a person again from now if staff had spoken last."""
    if not conversation_ids:
        return
    await conn.execute(
        """
        WITH woken AS (
            UPDATE escalations AS e SET
                waiting_since = coalesce(e.waiting_since, now()),
                status = CASE WHEN e.status = 'snoozed'
                    THEN CASE WHEN e.assigned_to IS NULL THEN 'pending' ELSE 'open' END
                    ELSE e.status END,
                snoozed_until = CASE WHEN e.status = 'snoozed' THEN NULL ELSE e.snoozed_until END,
                updated_at = now()
            FROM escalations AS before
            WHERE e.id = before.id AND e.conversation_id = ANY($1::bigint[])
              AND e.status <> 'resolved'
              AND (e.status = 'snoozed' OR e.waiting_since IS NULL)
            RETURNING e.id, before.status AS was
        )
        INSERT INTO escalation_actions (escalation_id, action)
        SELECT id, 'woken_by_customer' FROM woken WHERE was = 'snoozed'
        """,
        list(conversation_ids),
    )


async def wake_snoozed(conn: Conn) -> int:
    """Items whose snooze time has passed are back in the queue (upkeep chore)."""
    rows = await conn.fetch(
        """
        WITH woken AS (
            UPDATE escalations SET snoozed_until = NULL, updated_at = now(),
                status = CASE WHEN assigned_to IS NULL THEN 'pending' ELSE 'open' END
            WHERE status = 'snoozed' AND snoozed_until <= now()
            RETURNING id
        )
        INSERT INTO escalation_actions (escalation_id, action)
        SELECT id, 'snooze_ended' FROM woken RETURNING escalation_id
        """
    )
    return len(rows)


async def holding(conn: Conn, conversation_ids: Sequence[int]) -> set[int]:
    """Of these conversations, those with an unresolved item (a handed-over one without
    any is not held by anybody: the bot answers it)."""
    if not conversation_ids:
        return set()
    rows = await conn.fetch(
        """
        SELECT DISTINCT conversation_id FROM escalations
        WHERE conversation_id = ANY($1::bigint[]) AND status <> 'resolved'
        """,
        list(conversation_ids),
    )
    return {r["conversation_id"] for r in rows}


async def customer_returned(conn: Conn, conversation_id: int) -> None:
    """The customer typed `menu` while a person had the conversation: the bot has it
    again; staff see that on every unresolved item of it."""
    await conn.execute(
        """
        INSERT INTO escalation_actions (escalation_id, action)
        SELECT id, 'customer_returned_to_bot' FROM escalations
        WHERE conversation_id = $1 AND status <> 'resolved'
        """,
        conversation_id,
    )


# -- reading the queue ------------------------------------------------------------------


async def list_items(conn: Conn, view: View, *, staff_id: int, limit: int = 200) -> list[Item]:
    """The queue as one staff member sees it: most urgent first, then longest waiting.
    `all` is every unresolved item not snoozed; `resolved` the latest resolved."""
    active = f"({_EFFECTIVE_STATUS}) IN ('pending', 'open')"
    where = {
        "mine": f"{active} AND e.assigned_to = $1",
        "unassigned": f"{active} AND e.assigned_to IS NULL AND $1::bigint IS NOT NULL",
        "all": f"{active} AND $1::bigint IS NOT NULL",
        "snoozed": f"({_EFFECTIVE_STATUS}) = 'snoozed' AND $1::bigint IS NOT NULL",
        "resolved": "e.status = 'resolved' AND $1::bigint IS NOT NULL",
    }[view]
    order = (
        "e.resolved_at DESC NULLS LAST, e.id DESC"
        if view == "resolved"
        else f"{_PRIORITY_ORDER}, e.waiting_since ASC NULLS LAST, e.created_at"
    )
    rows = await conn.fetch(
        f"SELECT {_ITEM_COLUMNS} {_ITEM_FROM} WHERE {where} ORDER BY {order} LIMIT $2",
        staff_id,
        limit,
    )
    return [_item(r) for r in rows]


async def counts(conn: Conn, *, staff_id: int) -> dict[str, int]:
    """How many items each view holds (the filters' badges)."""
    row = await conn.fetchrow(
        f"""
        SELECT
            count(*) FILTER (WHERE st IN ('pending', 'open') AND assigned_to = $1) AS mine,
            count(*) FILTER (WHERE st IN ('pending', 'open') AND assigned_to IS NULL)
                AS unassigned,
            count(*) FILTER (WHERE st IN ('pending', 'open')) AS all,
            count(*) FILTER (WHERE st = 'snoozed') AS snoozed
        FROM (SELECT {_EFFECTIVE_STATUS} AS st, e.assigned_to
              FROM escalations AS e WHERE e.status <> 'resolved') AS q
        """,
        staff_id,
    )
    assert row is not None
    return dict(row)


@dataclass(frozen=True, slots=True)
class Gauges:
    """The queue for /metrics: unresolved items by status, and how long the customer
    who has waited longest for a person has waited (0: nobody waits)."""

    by_status: dict[str, int]
    oldest_waiting_seconds: float


async def gauges(conn: Conn) -> Gauges:
    rows = await conn.fetch(
        f"""
        SELECT {_EFFECTIVE_STATUS} AS status, count(*) AS n,
            coalesce(extract(epoch FROM now() - min(e.waiting_since)
                             FILTER (WHERE {_EFFECTIVE_STATUS} <> 'snoozed')), 0) AS waited
        FROM escalations AS e WHERE e.status <> 'resolved' GROUP BY 1
        """
    )
    return Gauges(
        by_status={r["status"]: r["n"] for r in rows},
        oldest_waiting_seconds=float(max((r["waited"] for r in rows), default=0)),
    )


async def get_item(conn: Conn, item_id: int) -> Item | None:
    row = await conn.fetchrow(f"SELECT {_ITEM_COLUMNS} {_ITEM_FROM} WHERE e.id = $1", item_id)
    return _item(row) if row else None


async def conversation_items(conn: Conn, conversation_id: int, *, resolved: int = 5) -> list[Item]:
    """A conversation's unresolved items, and its latest resolved ones."""
    rows = await conn.fetch(
        f"""
        SELECT * FROM (
            (SELECT {_ITEM_COLUMNS} {_ITEM_FROM}
             WHERE e.conversation_id = $1 AND e.status <> 'resolved')
            UNION ALL
            (SELECT {_ITEM_COLUMNS} {_ITEM_FROM}
             WHERE e.conversation_id = $1 AND e.status = 'resolved'
             ORDER BY e.resolved_at DESC NULLS LAST, e.id DESC LIMIT $2)
        ) AS t
        ORDER BY t.status = 'resolved', t.id
        """,
        conversation_id,
        resolved,
    )
    return [_item(r) for r in rows]


async def actions(conn: Conn, item_ids: Sequence[int]) -> list[Action]:
    rows = await conn.fetch(
        """
        SELECT a.id, a.escalation_id, s.username AS staff, a.action, a.detail, a.at
        FROM escalation_actions AS a LEFT JOIN staff AS s ON s.id = a.staff_id
        WHERE a.escalation_id = ANY($1::bigint[])
        ORDER BY a.id
        """,
        list(item_ids),
    )
    return [Action(**dict(r)) for r in rows]


async def merged_into(conn: Conn, conversation_id: int) -> int | None:
    """The conversation a merged one lives on in (one person, one conversation)."""
    survivor: int | None = await conn.fetchval(
        "SELECT merged_into FROM conversations WHERE id = $1", conversation_id
    )
    return survivor


async def conversation(conn: Conn, conversation_id: int) -> asyncpg.Record | None:
    """The conversation's row (its customer's ids and name, state, last message)."""
    return await conn.fetchrow(
        """
        SELECT id, key, wa_id, user_id, profile_name, client_id, flow_state, last_inbound_at
        FROM conversations WHERE id = $1 AND merged_into IS NULL
        """,
        conversation_id,
    )


# -- staff actions ----------------------------------------------------------------------


async def _record(
    conn: Conn, item_ids: Sequence[int], staff_id: int | None, action: str, **detail: Any
) -> None:
    await conn.execute(
        """
        INSERT INTO escalation_actions (escalation_id, staff_id, action, detail)
        SELECT unnest($1::bigint[]), $2, $3, $4
        """,
        list(item_ids),
        staff_id,
        action,
        json.loads(json.dumps(detail, default=str)),
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    ok: bool
    # When not: who has it open (taking it from them is a reassignment, said so).
    holder: str | None = None


async def claim(conn: Conn, item_id: int, staff_id: int) -> Claimed:
    """Take an unresolved item: it is open and this staff member's. A pending or snoozed
    item may be taken even when pre-assigned (the account manager may be away); one
    another member has open is not taken from under them. Not ok and no holder: it is
    resolved (or gone)."""
    taken = await conn.fetchval(
        """
        UPDATE escalations SET status = 'open', assigned_to = $2, snoozed_until = NULL,
            updated_at = now()
        WHERE id = $1
          AND (status IN ('pending', 'snoozed') OR (status = 'open' AND assigned_to IS NULL))
        RETURNING id
        """,
        item_id,
        staff_id,
    )
    if taken is not None:
        await _record(conn, [item_id], staff_id, "claimed")
        return Claimed(ok=True)
    # Read afresh (a claim that waited for another's commit sees it now, holder and all).
    now = await conn.fetchrow(
        """
        SELECT e.status, e.assigned_to, s.username
        FROM escalations AS e LEFT JOIN staff AS s ON s.id = e.assigned_to
        WHERE e.id = $1
        """,
        item_id,
    )
    if now is None or now["status"] == "resolved":
        return Claimed(ok=False)
    if now["assigned_to"] == staff_id:
        return Claimed(ok=True)  # theirs already: nothing to record
    return Claimed(ok=False, holder=now["username"])


async def assign(conn: Conn, item_id: int, staff_id: int, to_staff_id: int | None) -> bool:
    """Hand an unresolved item to another staff member (open, theirs) or back to the
    queue (None: pending, nobody's)."""
    to = await conn.fetchval(
        """
        WITH target AS (SELECT id, username FROM staff WHERE id = $2 AND active)
        UPDATE escalations SET assigned_to = (SELECT id FROM target),
            status = CASE WHEN status = 'snoozed' THEN status
                          WHEN (SELECT id FROM target) IS NULL THEN 'pending' ELSE 'open' END,
            updated_at = now()
        WHERE id = $1 AND status <> 'resolved'
          AND ($2::bigint IS NULL OR EXISTS (SELECT FROM target))
        RETURNING coalesce((SELECT username FROM target), '')
        """,
        item_id,
        to_staff_id,
    )
    if to is None:
        return False
    await _record(conn, [item_id], staff_id, "assigned", to=to or None)
    return True


async def snooze(conn: Conn, item_id: int, staff_id: int, until: datetime | None) -> bool:
    """Out of the queue until `until` or (None) the customer's next message."""
    changed = await conn.fetchval(
        """
        UPDATE escalations SET status = 'snoozed', snoozed_until = $2, updated_at = now()
        WHERE id = $1 AND status <> 'resolved' RETURNING id
        """,
        item_id,
        until,
    )
    if changed:
        await _record(conn, [item_id], staff_id, "snoozed", until=until)
    return changed is not None


async def set_priority(conn: Conn, item_id: int, staff_id: int, priority: str) -> bool:
    if priority not in PRIORITIES:
        return False
    changed = await conn.fetchval(
        """
        UPDATE escalations SET priority = $2, updated_at = now()
        WHERE id = $1 AND status <> 'resolved' AND priority <> $2 RETURNING id
        """,
        item_id,
        priority,
    )
    if changed:
        await _record(conn, [item_id], staff_id, "priority", priority=priority)
    return changed is not None


@dataclass(frozen=True, slots=True)
class Resolved:
    conversation_id: int
    # The conversation goes back to the bot (no other item has a person talking in it).
    handed_back: bool
    recipient: str


async def resolve(conn: Conn, item_id: int, staff_id: int) -> Resolved | None:
    """Resolve an item. When the conversation was with a person and no other unresolved
    item has one talking in it (a customer's request, or an item staff have replied on),
    the bot has the conversation again; the caller tells the customer.

    The conversation is locked before the item, the order the dispatcher and a staff
    reply take them in (the other order deadlocks against a customer writing)."""
    conv = await conn.fetchrow(
        """
        SELECT c.id, c.flow_state, coalesce(c.wa_id, c.user_id, c.key) AS recipient
        FROM conversations AS c
        WHERE c.id = (SELECT conversation_id FROM escalations WHERE id = $1)
        FOR UPDATE
        """,
        item_id,
    )
    if conv is None:
        return None
    resolved = await conn.fetchval(
        """
        UPDATE escalations SET status = 'resolved', resolved_at = now(), updated_at = now(),
            snoozed_until = NULL
        WHERE id = $1 AND status <> 'resolved' AND conversation_id = $2
        RETURNING id
        """,
        item_id,
        conv["id"],
    )
    if resolved is None:
        return None
    await _record(conn, [item_id], staff_id, "resolved")
    still_held = await conn.fetchval(
        """
        SELECT EXISTS (SELECT 1 FROM escalations WHERE conversation_id = $1
                       AND status <> 'resolved' AND (reason = $2 OR first_reply_at IS NOT NULL))
        """,
        conv["id"],
        CUSTOMER_REQUEST,
    )
    handed_back = conv["flow_state"] == HANDED_OVER and not still_held
    if handed_back:
        await conn.execute(
            "UPDATE conversations SET flow_state = $2, updated_at = now() WHERE id = $1",
            conv["id"],
            HANDED_BACK,
        )
    return Resolved(
        conversation_id=conv["id"],
        handed_back=handed_back,
        recipient=conv["recipient"],
    )


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    conversation_id: int
    recipient: str
    window_open: bool
    item_ids: tuple[int, ...]


async def reply_target(conn: Conn, conversation_id: int) -> ReplyTarget | None:
    """Lock a conversation for a staff reply: who to send to, whether the 24 h window is
    open, its unresolved items (None: nothing to reply on — it is not in the queue)."""
    conv = await conn.fetchrow(
        """
        SELECT id, coalesce(wa_id, user_id, key) AS recipient,
            coalesce(last_inbound_at > now() - interval '24 hours', false) AS window_open
        FROM conversations WHERE id = $1 AND merged_into IS NULL FOR UPDATE
        """,
        conversation_id,
    )
    if conv is None:
        return None
    items = await conn.fetch(
        "SELECT id FROM escalations WHERE conversation_id = $1 AND status <> 'resolved'",
        conversation_id,
    )
    if not items:
        return None
    return ReplyTarget(
        conversation_id=conv["id"],
        recipient=conv["recipient"],
        window_open=conv["window_open"],
        item_ids=tuple(r["id"] for r in items),
    )


async def staff_reply(
    conn: Conn,
    target: ReplyTarget,
    staff_id: int,
    message: dict[str, Any],
    template: dict[str, Any] | None,
) -> int:
    """Queue a staff member's message (the sender sends it, exactly once, paced) and let
    the conversation be a person's: the bot is silent in it from now on. The items they
    replied on are theirs unless another member has them open (a pre-assigned item still
    pending goes to whoever answers); first reply noted, nobody waits."""
    outbox_id: int = await conn.fetchval(
        """
        INSERT INTO outbox (recipient, conversation_id, purpose, message, template, staff_id,
                            force_template)
        VALUES ($1, $2, 'staff', $3, $4, $5, $6)
        RETURNING id
        """,
        target.recipient,
        target.conversation_id,
        without_nul(message),
        without_nul(template) if template else None,
        staff_id,
        message.get("kind") == "template",
    )
    await conn.execute(
        """
        UPDATE escalations SET
            first_reply_at = coalesce(first_reply_at, now()),
            waiting_since = NULL,
            assigned_to = CASE WHEN status = 'open' THEN coalesce(assigned_to, $2) ELSE $2 END,
            status = 'open', snoozed_until = NULL,
            updated_at = now()
        WHERE id = ANY($1::bigint[])
        """,
        list(target.item_ids),
        staff_id,
    )
    await _record(conn, target.item_ids, staff_id, "replied", outbox_id=outbox_id)
    await conn.execute(
        "UPDATE conversations SET flow_state = $2, updated_at = now() WHERE id = $1",
        target.conversation_id,
        HANDED_OVER,
    )
    return outbox_id
