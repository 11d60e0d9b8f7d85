"""The staff console's accounts, sessions and canned replies, and the record of changes
to them (migrations 018, 019, 020).

A session is a row, not just a signed cookie: logout and disabling an account end it at
once, and every request checks the row (active member, not revoked, not expired). A
wrong password counts against the account; at the limit it is locked for a while, and
the lock is checked again when a right password is accepted, so a lock set by a
concurrent attempt still holds."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from store.db import Conn

ROLES = ("agent", "admin")


class UsernameTaken(ValueError):
    """Another member has this username (compared case-insensitively)."""


@dataclass(frozen=True, slots=True)
class StaffMember:
    """Who is logged in: what the console's pages need to know about them."""

    id: int
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class StaffAccount:
    """A member as the team list shows it."""

    id: int
    username: str
    role: str
    active: bool
    locked_until: datetime | None
    failed_logins: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LoginAccount:
    """What a login attempt is checked against; `locked` is read with the database's clock."""

    id: int
    username: str
    role: str
    password_hash: str
    active: bool
    locked: bool


@dataclass(frozen=True, slots=True)
class StaffSession:
    """A live session: whose it is and the CSRF token its forms send back."""

    id: str
    member: StaffMember
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CannedReply:
    code: str
    body: str
    updated_at: datetime
    updated_by: str | None


async def add_staff(conn: Conn, username: str, role: str, password_hash: str) -> int:
    """A new active member; UsernameTaken when the name is in use (in any case)."""
    try:
        staff_id: int = await conn.fetchval(
            "INSERT INTO staff (username, role, password_hash) VALUES ($1, $2, $3) RETURNING id",
            username,
            role,
            password_hash,
        )
    except asyncpg.UniqueViolationError:
        raise UsernameTaken(username) from None
    return staff_id


async def reset_staff(conn: Conn, username: str, role: str, password_hash: str) -> int:
    """Create the member or set them back to `role` and this password, active and
    unlocked (the sandbox's demo team, made again at every start)."""
    staff_id: int = await conn.fetchval(
        """
        INSERT INTO staff (username, role, password_hash) VALUES ($1, $2, $3)
        ON CONFLICT (lower(username)) DO UPDATE SET role = $2, password_hash = $3,
            active = true, failed_logins = 0, locked_until = NULL, updated_at = now()
        RETURNING id
        """,
        username,
        role,
        password_hash,
    )
    return staff_id


async def list_staff(conn: Conn) -> list[StaffAccount]:
    rows = await conn.fetch(
        """
        SELECT id, username, role, active, locked_until, failed_logins, created_at
        FROM staff ORDER BY lower(username)
        """
    )
    return [StaffAccount(**dict(r)) for r in rows]


async def set_active(conn: Conn, username: str, active: bool) -> bool:
    """Enable or disable a member (False: no such username). Disabling also revokes the
    member's sessions, so an open console stops working at its next request."""
    async with conn.transaction():
        staff_id = await conn.fetchval(
            """
            UPDATE staff SET active = $2, updated_at = now()
            WHERE lower(username) = lower($1) RETURNING id
            """,
            username,
            active,
        )
        if staff_id is None:
            return False
        if not active:
            await conn.execute(
                "UPDATE staff_sessions SET revoked_at = now()"
                " WHERE staff_id = $1 AND revoked_at IS NULL",
                staff_id,
            )
    return True


async def set_role(conn: Conn, username: str, role: str) -> bool:
    """Change a member's role (False: no such username). It applies at their next
    request: the session lookup reads the role each time."""
    result = await conn.execute(
        "UPDATE staff SET role = $2, updated_at = now() WHERE lower(username) = lower($1)",
        username,
        role,
    )
    return result != "UPDATE 0"


async def set_password(conn: Conn, username: str, password_hash: str) -> bool:
    """A new password (False: no such username): the account unlocked, its wrong-password
    count cleared, and every session of it ended (whoever knew the old one is out)."""
    staff_id = await conn.fetchval(
        """
        UPDATE staff SET password_hash = $2, failed_logins = 0, locked_until = NULL,
            updated_at = now()
        WHERE lower(username) = lower($1)
        RETURNING id
        """,
        username,
        password_hash,
    )
    if staff_id is None:
        return False
    await conn.execute(
        "UPDATE staff_sessions SET revoked_at = now() WHERE staff_id = $1 AND revoked_at IS NULL",
        staff_id,
    )
    return True


async def login_account(conn: Conn, username: str) -> LoginAccount | None:
    row = await conn.fetchrow(
        """
        SELECT id, username, role, password_hash, active,
               coalesce(locked_until > now(), false) AS locked
        FROM staff WHERE lower(username) = lower($1)
        """,
        username,
    )
    return None if row is None else LoginAccount(**dict(row))


async def record_failed_login(
    conn: Conn, staff_id: int, *, attempts: int, lock_for: timedelta
) -> bool:
    """Count a wrong password; True when it locked the account. Attempts while locked
    are not counted (the lock is not extended by someone hammering it); at the limit the
    count starts again, so the next lock also takes `attempts` wrong passwords."""
    locked: bool | None = await conn.fetchval(
        """
        UPDATE staff SET
            failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END,
            locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + $3::interval
                                ELSE locked_until END,
            updated_at = now()
        WHERE id = $1 AND (locked_until IS NULL OR locked_until <= now())
        RETURNING failed_logins = 0
        """,
        staff_id,
        attempts,
        lock_for,
    )
    return bool(locked)


async def login_succeeded(conn: Conn, staff_id: int, new_hash: str | None = None) -> bool:
    """Clear the wrong-password count (and store a rehashed password); False when the
    account is disabled or locked by now — the login is then refused."""
    result = await conn.execute(
        """
        UPDATE staff SET failed_logins = 0, locked_until = NULL,
            password_hash = coalesce($2, password_hash), updated_at = now()
        WHERE id = $1 AND active AND (locked_until IS NULL OR locked_until <= now())
        """,
        staff_id,
        new_hash,
    )
    return result != "UPDATE 0"


async def create_session(conn: Conn, staff_id: int, lifetime: timedelta) -> tuple[str, str]:
    """A new session for the member: (session id, CSRF token), both unguessable."""
    session_id = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    await conn.execute(
        """
        INSERT INTO staff_sessions (id, staff_id, csrf_token, expires_at)
        VALUES ($1, $2, $3, now() + $4::interval)
        """,
        session_id,
        staff_id,
        csrf_token,
        lifetime,
    )
    return session_id, csrf_token


async def live_session(conn: Conn, session_id: str) -> StaffSession | None:
    """The session if it still holds: not revoked, not expired, its member active."""
    row = await conn.fetchrow(
        """
        SELECT s.id AS session_id, s.csrf_token, s.expires_at, m.id, m.username, m.role
        FROM staff_sessions AS s JOIN staff AS m ON m.id = s.staff_id
        WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND m.active
        """,
        session_id,
    )
    if row is None:
        return None
    member = StaffMember(id=row["id"], username=row["username"], role=row["role"])
    return StaffSession(row["session_id"], member, row["csrf_token"], row["expires_at"])


async def revoke_session(conn: Conn, session_id: str) -> None:
    await conn.execute(
        "UPDATE staff_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        session_id,
    )


async def forget_old_sessions(conn: Conn, older_than: timedelta) -> int:
    """Delete sessions that ended (expired or revoked) more than `older_than` ago."""
    result = await conn.execute(
        """
        DELETE FROM staff_sessions
        WHERE least(expires_at, coalesce(revoked_at, 'infinity')) < now() - $1::interval
        """,
        older_than,
    )
    return int(result.split()[-1])


async def console_secret(conn: Conn, candidate: str) -> str:
    """The shared cookie-signing key: `candidate` if no process stored one before."""
    await conn.execute(
        "INSERT INTO console_secret (secret) VALUES ($1) ON CONFLICT DO NOTHING", candidate
    )
    secret: str = await conn.fetchval("SELECT secret FROM console_secret")
    return secret


async def canned_replies(conn: Conn) -> list[CannedReply]:
    rows = await conn.fetch(
        """
        SELECT r.code, r.body, r.updated_at, s.username AS updated_by
        FROM canned_replies AS r LEFT JOIN staff AS s ON s.id = r.updated_by
        ORDER BY r.code
        """
    )
    return [CannedReply(**dict(r)) for r in rows]


async def canned_reply(conn: Conn, code: str) -> str | None:
    body: str | None = await conn.fetchval("SELECT body FROM canned_replies WHERE code = $1", code)
    return body


async def save_canned_reply(conn: Conn, code: str, body: str, staff_id: int) -> None:
    """Add the reply, or replace the body of the one with this code."""
    await conn.execute(
        """
        INSERT INTO canned_replies (code, body, updated_by) VALUES ($1, $2, $3)
        ON CONFLICT (code) DO UPDATE
            SET body = excluded.body, updated_by = excluded.updated_by, updated_at = now()
        """,
        code,
        body,
        staff_id,
    )


async def delete_canned_reply(conn: Conn, code: str) -> bool:
    result = await conn.execute("DELETE FROM canned_replies WHERE code = $1", code)
    return result != "DELETE 0"


# -- the record of changes to the team and the canned replies --------------------------

TEAM_CHANGES = ("staff_added", "staff_disabled", "staff_enabled", "role_changed", "password_set")
CANNED_CHANGES = ("canned_saved", "canned_deleted")


@dataclass(frozen=True, slots=True)
class Change:
    actor: str | None  # None: the command line
    action: str
    subject: str
    detail: dict[str, Any]
    at: datetime


async def record_change(
    conn: Conn, actor_id: int | None, action: str, subject: str, **detail: str
) -> None:
    """Write down a change to the team or the canned replies (in the change's own
    transaction, so there is never one without the other)."""
    await conn.execute(
        "INSERT INTO staff_audit (actor_id, action, subject, detail) VALUES ($1, $2, $3, $4)",
        actor_id,
        action,
        subject,
        detail,
    )


async def changes(conn: Conn, actions: Sequence[str], *, limit: int = 50) -> list[Change]:
    """The latest changes of these kinds, newest first."""
    rows = await conn.fetch(
        """
        SELECT s.username AS actor, a.action, a.subject, a.detail, a.at
        FROM staff_audit AS a LEFT JOIN staff AS s ON s.id = a.actor_id
        WHERE a.action = ANY($1::text[])
        ORDER BY a.id DESC LIMIT $2
        """,
        list(actions),
        limit,
    )
    return [Change(**dict(r)) for r in rows]
