"""Who may use the staff console: passwords, the session cookie, CSRF, security headers.

The cookie carries a staff_sessions row id signed with itsdangerous (timestamped, so an
old cookie fails even before the row is looked at); the row is checked on every request,
so logout and `staff disable` end a session at once. Every POST sends back a CSRF token:
the session's own, or for the login form (no session yet) a signed double-submit cookie.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from urllib.parse import quote, urlsplit

from aiohttp import web
from aiohttp.web_request import FileField
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, TimestampSigner
from multidict import MultiDictProxy

from bot.webhook import POOL, SETTINGS
from store import staff
from store.staff import StaffMember

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PREFIX = "/staff/"
LOGIN_PATH = "/staff/login"
STATIC_PREFIX = "/staff/static/"
SESSION_COOKIE = "staff_session"
LOGIN_CSRF_COOKIE = "staff_login_csrf"
COOKIE_PATH = "/staff"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
MIN_PASSWORD_LENGTH = 10
USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# A login form left open longer than this is refused (403) and shown again.
LOGIN_FORM_MAX_AGE = timedelta(hours=2)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

# argon2-cffi's defaults: argon2id with RFC 9106's low-memory profile. When they change
# in a later release, a login with the right password stores a new hash (needs_rehash).
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id encoded hash (parameters and salt included) — all that is stored."""
    return _hasher.hash(password)


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    ok: bool
    # A new hash to store: the password was right but hashed with older parameters.
    rehashed: str | None = None


def verify_password(password_hash: str, password: str) -> PasswordCheck:
    try:
        _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return PasswordCheck(ok=False)
    if _hasher.check_needs_rehash(password_hash):
        return PasswordCheck(ok=True, rehashed=hash_password(password))
    return PasswordCheck(ok=True)


async def check_password(password_hash: str, password: str) -> PasswordCheck:
    """verify_password in a thread: argon2 takes tens of milliseconds of CPU, which the
    event loop (webhooks acked on time) must not wait for."""
    return await asyncio.to_thread(verify_password, password_hash, password)


@cache
def dummy_hash() -> str:
    """What an unknown or disabled username is checked against, so it takes as long as a
    real account's wrong password (no telling which usernames exist)."""
    return hash_password(secrets.token_urlsafe(16))


def username_problem(username: str) -> str | None:
    if not USERNAME.fullmatch(username):
        return "El usuario debe tener de 1 a 64 letras sin acentos, números, '.', '_', '-' o '@'."
    return None


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"La contraseña debe tener al menos {MIN_PASSWORD_LENGTH} caracteres."
    return None


class ConsoleKeys:
    """The signers of the console's cookies, from STAFF_SECRET or the database's key."""

    def __init__(self, secret: str, session_lifetime: timedelta):
        self.session_lifetime = session_lifetime
        self._session = TimestampSigner(secret, salt="staff-session")
        self._login = TimestampSigner(secret, salt="staff-login-csrf")

    def session_cookie(self, session_id: str) -> str:
        return self._session.sign(session_id).decode()

    def session_id(self, cookie: str) -> str | None:
        try:
            value = self._session.unsign(cookie, max_age=int(self.session_lifetime.total_seconds()))
        except BadSignature:
            return None
        return value.decode()

    def login_token(self) -> tuple[str, str]:
        """A login form's CSRF token and the signed cookie it must come back with."""
        token = secrets.token_urlsafe(32)
        return token, self._login.sign(token).decode()

    def login_token_matches(self, cookie: str, sent: str) -> bool:
        try:
            token = self._login.unsign(cookie, max_age=int(LOGIN_FORM_MAX_AGE.total_seconds()))
        except BadSignature:
            return False
        return hmac.compare_digest(token, sent.encode())


CONSOLE_KEYS: web.AppKey[ConsoleKeys] = web.AppKey("console_keys", ConsoleKeys)
# What the guard found, for the handlers and the templates (current_staff, csrf_token).
STAFF: web.RequestKey[StaffMember] = web.RequestKey("staff", StaffMember)
SESSION_ID: web.RequestKey[str] = web.RequestKey("session_id", str)
CSRF_TOKEN: web.RequestKey[str] = web.RequestKey("csrf_token", str)


async def load_keys(app: web.Application) -> None:
    """On start-up, after the pool is open: STAFF_SECRET, else the key in the database
    (this process's random candidate if it is the first)."""
    settings = app[SETTINGS]
    secret = settings.staff_secret
    if not secret:
        async with app[POOL].acquire() as conn:
            secret = await staff.console_secret(conn, secrets.token_urlsafe(48))
    app[CONSOLE_KEYS] = ConsoleKeys(secret, timedelta(hours=settings.staff_session_hours))
    # Made now, so the first unknown username is not slower than a wrong password.
    await asyncio.to_thread(dummy_hash)


def current_staff(request: web.Request) -> StaffMember:
    """The logged-in member (the guard lets no request without one reach a page)."""
    member: StaffMember | None = request.get(STAFF)
    if member is None:
        raise web.HTTPUnauthorized(text="Sesión requerida.")
    return member


def csrf_token(request: web.Request) -> str:
    """The token this request's forms (or fetches, as X-CSRF-Token) must send back."""
    token: str = request.get(CSRF_TOKEN, "")
    return token


def require_admin(request: web.Request) -> StaffMember:
    member = current_staff(request)
    if not member.is_admin:
        raise web.HTTPForbidden(text="Solo para administradores.")
    return member


def _https(request: web.Request) -> bool:
    # Behind fly.io's proxy (force_https) the request reaches us over plain HTTP.
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_session_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    keys = request.app[CONSOLE_KEYS]
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(keys.session_lifetime.total_seconds()),
        path=COOKIE_PATH,
        httponly=True,
        secure=_https(request),
        # Lax, not Strict: a link to a conversation (from an alert, a chat) opens the
        # console logged in; every POST is covered by the CSRF token anyway.
        samesite="Lax",
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)


def set_login_cookie(request: web.Request, response: web.StreamResponse, cookie: str) -> None:
    """The signed twin of a login form's CSRF token (ConsoleKeys.login_token)."""
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        cookie,
        max_age=int(LOGIN_FORM_MAX_AGE.total_seconds()),
        path=COOKIE_PATH,
        httponly=True,
        secure=_https(request),
        samesite="Strict",
    )


def safe_next(value: str | None) -> str:
    """Where to go after login: a path of the console, never another site."""
    if not value or "\\" in value or any(ord(ch) < 0x20 for ch in value):
        return PREFIX
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX):
        return PREFIX
    return value


def _in_console(path: str) -> bool:
    return path == "/staff" or path.startswith(PREFIX)


async def _sent_csrf_token(request: web.Request) -> str:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        value = (await _form(request)).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    return sent


async def _form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """The POSTed form, read once (aiohttp keeps it for the handler). A body that is not
    text, or text with NUL characters (PostgreSQL's text refuses them), is a 400 here
    rather than an error deep in a handler."""
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError) as e:
        raise web.HTTPBadRequest(text="Formulario ilegible.") from e
    if any(isinstance(v, str) and "\x00" in v for v in form.values()):
        raise web.HTTPBadRequest(text="El formulario tiene caracteres no válidos.")
    return form


@web.middleware
async def console_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under /staff/: find the session; no session → the login page (GET) or 401; a POST
    (or any unsafe method) without its CSRF token → 403. Login and static files are the
    only pages open without a session."""
    path = request.path
    if not _in_console(path) or path.startswith(STATIC_PREFIX):
        return await handler(request)
    if "\x00" in path:
        raise web.HTTPBadRequest(text="Dirección no válida.")
    cookie = request.cookies.get(SESSION_COOKIE)
    session_id = request.app[CONSOLE_KEYS].session_id(cookie) if cookie else None
    if session_id is not None:
        async with request.app[POOL].acquire() as conn:
            session = await staff.live_session(conn, session_id)
        if session is not None:
            request[STAFF] = session.member
            request[CSRF_TOKEN] = session.csrf_token
            request[SESSION_ID] = session.id
    is_login = path == LOGIN_PATH
    if STAFF not in request and not is_login:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther(f"{LOGIN_PATH}?next={quote(request.path_qs, safe='')}")
        raise web.HTTPUnauthorized(text="Sesión requerida.")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        await _form(request)
        sent = await _sent_csrf_token(request)
        if is_login:
            ok = request.app[CONSOLE_KEYS].login_token_matches(
                request.cookies.get(LOGIN_CSRF_COOKIE, ""), sent
            )
        else:
            ok = hmac.compare_digest(request[CSRF_TOKEN].encode(), sent.encode())
        if not ok:
            raise web.HTTPForbidden(text="Token CSRF ausente o inválido. Recargue la página.")
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every console response (pages, errors, redirects, static
    files) gets the headers, whichever handler or middleware made it."""
    if not _in_console(request.path):
        return
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith(STATIC_PREFIX):
        response.headers["Cache-Control"] = "no-store"
