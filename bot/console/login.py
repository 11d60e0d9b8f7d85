"""The login page and logout.

Every refusal says the same thing and takes the same time — wrong password, unknown
username, disabled or locked account — so the form tells nobody which usernames exist or
which account is locked."""

from __future__ import annotations

import logging
from datetime import timedelta

import aiohttp_jinja2
from aiohttp import web

from bot.console.auth import (
    CONSOLE_KEYS,
    COOKIE_PATH,
    LOGIN_CSRF_COOKIE,
    SESSION_ID,
    STAFF,
    check_password,
    clear_session_cookie,
    dummy_hash,
    safe_next,
    set_login_cookie,
    set_session_cookie,
)
from bot.webhook import POOL, SETTINGS
from store import staff

log = logging.getLogger(__name__)

REFUSED = "Usuario o contraseña incorrectos, o cuenta bloqueada temporalmente."
# Ended sessions are kept this long (who was logged in when), then deleted at a login.
_ENDED_SESSIONS_KEPT = timedelta(days=30)


def _form(
    request: web.Request, *, next_url: str, error: str = "", status: int = 200
) -> web.Response:
    """The form, with a fresh CSRF token and its signed cookie."""
    token, cookie = request.app[CONSOLE_KEYS].login_token()
    page = aiohttp_jinja2.render_template(
        "login.html",
        request,
        {"next": next_url, "error": error, "csrf_token": token},
        status=status,
    )
    set_login_cookie(request, page, cookie)
    return page


async def login_page(request: web.Request) -> web.Response:
    next_url = safe_next(request.query.get("next"))
    if STAFF in request:
        raise web.HTTPSeeOther(next_url)
    return _form(request, next_url=next_url)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    next_url = safe_next(str(form.get("next", "")) or None)
    settings = request.app[SETTINGS]
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        account = await staff.login_account(conn, username) if username else None
    stored = account.password_hash if account is not None and account.active else dummy_hash()
    check = await check_password(stored, password)
    attempts = settings.staff_lockout_attempts
    lock_for = timedelta(minutes=settings.staff_lockout_minutes)
    if account is None or not account.active or account.locked:
        # Not the typed name when it is nobody's: people type passwords there too.
        why = "unknown username" if account is None else f"{account.username!r} disabled or locked"
        log.info("staff login refused: %s", why)
        # The same round trip a wrong password costs (it changes nothing here: a locked
        # account's count is not moved, id 0 is nobody), so the answer's timing does not
        # tell which usernames exist.
        async with pool.acquire() as conn:
            await staff.record_failed_login(
                conn, account.id if account else 0, attempts=attempts, lock_for=lock_for
            )
        return _form(request, next_url=next_url, error=REFUSED, status=401)
    async with pool.acquire() as conn:
        if not check.ok:
            locked = await staff.record_failed_login(
                conn, account.id, attempts=attempts, lock_for=lock_for
            )
            if locked:
                log.warning("staff account %r locked after wrong passwords", account.username)
            return _form(request, next_url=next_url, error=REFUSED, status=401)
        async with conn.transaction():
            if not await staff.login_succeeded(conn, account.id, check.rehashed):
                return _form(request, next_url=next_url, error=REFUSED, status=401)
            session_id, _csrf = await staff.create_session(
                conn, account.id, request.app[CONSOLE_KEYS].session_lifetime
            )
            await staff.forget_old_sessions(conn, _ENDED_SESSIONS_KEPT)
    log.info("staff %r logged in", account.username)
    response = web.HTTPSeeOther(next_url)
    set_session_cookie(request, response, request.app[CONSOLE_KEYS].session_cookie(session_id))
    response.del_cookie(LOGIN_CSRF_COOKIE, path=COOKIE_PATH)
    raise response


async def logout(request: web.Request) -> web.Response:
    session_id = request.get(SESSION_ID)
    if session_id is not None:
        async with request.app[POOL].acquire() as conn:
            await staff.revoke_session(conn, session_id)
    response = web.HTTPSeeOther("/staff/login")
    clear_session_cookie(response)
    raise response
