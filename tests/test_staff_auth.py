"""The staff console's door: login, sessions, CSRF, lockout, admin-only pages, security
headers, and `python -m bot staff …` — the real service on a port, a real browser-like
client with its own cookie jar, real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from yarl import URL

from bot.app import build_app
from bot.console.auth import hash_password
from bot.serving import serve
from flows.menu import HANDED_OVER
from store import queue, staff
from tests.billing_fixture import JUAN_WA
from tests.harness import make_settings

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-password-1"
AGENT_PASSWORD = "agent-password-1"
REFUSED = "Usuario o contraseña incorrectos, o cuenta bloqueada temporalmente"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')

pytestmark = pytest.mark.timeout(60)


@dataclass
class Console:
    url: str
    pool: asyncpg.Pool
    database_url: str

    def browser(self) -> aiohttp.ClientSession:
        """A fresh browser: its own cookies (127.0.0.1 is an IP: the jar must be told)."""
        return aiohttp.ClientSession(base_url=self.url, cookie_jar=aiohttp.CookieJar(unsafe=True))


@cache
def hashed(password: str) -> str:
    return hash_password(password)


@pytest.fixture
async def console(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[Console]:
    async with pool.acquire() as conn:
        await staff.add_staff(conn, "admin", "admin", hashed(ADMIN_PASSWORD))
        await staff.add_staff(conn, "agent", "agent", hashed(AGENT_PASSWORD))
    app = build_app(make_settings(database_url), workers=False)
    runner: web.AppRunner
    runner, url = await serve(app)
    try:
        yield Console(url, pool, database_url)
    finally:
        await runner.cleanup()


async def token_of(browser: aiohttp.ClientSession, path: str) -> str:
    async with browser.get(path, allow_redirects=False) as r:
        assert r.status == 200, (path, r.status)
        found = _TOKEN.search(await r.text())
    assert found, f"no CSRF field in {path}"
    return found.group(1)


async def log_in(
    browser: aiohttp.ClientSession, username: str, password: str, *, next_url: str = ""
) -> aiohttp.ClientResponse:
    """Open the login page and send its form; the (closed) response of the POST."""
    token = await token_of(browser, "/staff/login")
    form = {"csrf_token": token, "username": username, "password": password, "next": next_url}
    async with browser.post("/staff/login", data=form, allow_redirects=False) as r:
        await r.read()
        return r


async def status_of(browser: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with browser.get(path, allow_redirects=False) as r:
        return r.status, r.headers.get("Location", "")


async def test_console_pages_need_a_session(console: Console) -> None:
    # Conversation 1 with its item 1, waiting for a person: what the URLs below name
    # exists, so a missing guard would show or change it rather than answer 404.
    async with console.pool.acquire() as conn:
        conversation_id = await conn.fetchval(
            "INSERT INTO conversations (key, wa_id, flow_state, last_inbound_at)"
            " VALUES ($1, $1, $2, now()) RETURNING id",
            JUAN_WA,
            HANDED_OVER,
        )
        await queue.escalate(conn, conversation_id, "c1", queue.CUSTOMER_REQUEST, {})
        item_id = await conn.fetchval("SELECT id FROM escalations")
    assert (conversation_id, item_id) == (1, 1)
    async with console.browser() as browser:
        for path in (
            "/staff/",
            "/staff",
            "/staff/admin/staff",
            "/staff/admin/canned",
            "/staff/admin/canned?edit=x",
            "/staff/conversations/1",
            "/staff/conversations/1/transcript",
            "/staff/live",
            "/staff/live?conversation=1",
            "/staff/no-such-page",
        ):
            status, location = await status_of(browser, path)
            assert status in (302, 303), (path, status)
            target = urlsplit(location)
            assert target.path == "/staff/login", (path, location)
            assert parse_qs(target.query)["next"] == [path], (path, location)
        for path in (
            "/staff/admin/canned",
            "/staff/admin/staff",
            "/staff/logout",
            "/staff/items/1/claim",
            "/staff/items/1/resolve",
            "/staff/conversations/1/reply",
        ):
            form = {"code": "x", "body": "y", "text": "Hola, soy de soporte."}
            async with browser.post(path, data=form, allow_redirects=False) as r:
                assert r.status in (401, 403), (path, r.status)
        async with browser.delete("/staff/admin/canned") as r:
            assert r.status == 401
        # Only the login page and the static files are open.
        assert (await status_of(browser, "/staff/login"))[0] == 200
        assert (await status_of(browser, "/staff/static/console.css"))[0] == 200
    async with console.pool.acquire() as conn:
        assert await staff.canned_replies(conn) == []
        # Nothing was claimed, resolved or sent.
        assert await conn.fetchval("SELECT count(*) FROM escalation_actions") == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
        item = await queue.get_item(conn, 1)
        assert item is not None
        assert (item.status, item.assigned_to, item.flow_state) == ("pending", None, HANDED_OVER)


async def test_a_login_goes_back_where_it_was_asked_and_only_inside_the_console(
    console: Console,
) -> None:
    async with console.browser() as browser:
        r = await log_in(browser, "admin", ADMIN_PASSWORD, next_url="/staff/admin/canned?edit=a")
        assert (r.status, r.headers["Location"]) == (303, "/staff/admin/canned?edit=a")
    for elsewhere in ("https://evil.example/", "//evil.example/staff/", "/\\evil.example", "/x"):
        async with console.browser() as browser:
            r = await log_in(browser, "admin", ADMIN_PASSWORD, next_url=elsewhere)
            assert (r.status, r.headers["Location"]) == (303, "/staff/"), elsewhere


async def test_a_post_without_its_csrf_token_is_refused(console: Console) -> None:
    async with console.browser() as browser:
        # The login form: no token, a made-up one, one without its cookie.
        token = await token_of(browser, "/staff/login")
        form = {"username": "admin", "password": ADMIN_PASSWORD}
        for sent in ({}, {"csrf_token": "forged"}, {"csrf_token": token + "x"}):
            async with browser.post("/staff/login", data=form | sent) as r:
                assert r.status == 403, sent
    async with (
        console.browser() as stranger,
        stranger.post("/staff/login", data=form | {"csrf_token": token}) as r,
    ):
        assert r.status == 403  # the token without the cookie it was issued with
    async with console.browser() as browser:
        assert (await log_in(browser, "admin", ADMIN_PASSWORD)).status == 303
        reply = {"code": "hola", "body": "Hola, ¿en qué podemos ayudarle?"}
        for sent in ({}, {"csrf_token": "forged"}, {"csrf_token": token}):
            async with browser.post(
                "/staff/admin/canned", data=reply | sent, allow_redirects=False
            ) as r:
                assert r.status == 403, sent
        async with browser.post(
            "/staff/logout", data={"csrf_token": "forged"}, allow_redirects=False
        ) as r:
            assert r.status == 403
        async with console.pool.acquire() as conn:
            assert await staff.canned_replies(conn) == []
        # The session's own token, as a form field or as the header.
        page_token = await token_of(browser, "/staff/admin/canned")
        async with browser.post(
            "/staff/admin/canned", data=reply | {"csrf_token": page_token}, allow_redirects=False
        ) as r:
            assert r.status == 303
        async with browser.post(
            "/staff/admin/canned/hola/delete",
            headers={"X-CSRF-Token": page_token},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
        async with console.pool.acquire() as conn:
            assert await staff.canned_replies(conn) == []


async def test_five_wrong_passwords_lock_the_account_for_a_while(console: Console) -> None:
    async with console.browser() as browser:
        for _ in range(5):
            r = await log_in(browser, "agent", "not-the-password")
            assert r.status == 401
        # Locked: the right password is refused with the same words.
        token = await token_of(browser, "/staff/login")
        form = {"csrf_token": token, "username": "agent", "password": AGENT_PASSWORD}
        async with browser.post("/staff/login", data=form, allow_redirects=False) as r:
            assert r.status == 401
            assert REFUSED in await r.text()
        async with browser.post(
            "/staff/login",
            data={
                **form,
                "csrf_token": await token_of(browser, "/staff/login"),
                "username": "nobody",
            },
            allow_redirects=False,
        ) as r:
            assert r.status == 401
            assert REFUSED in await r.text()
        locked_until = await console.pool.fetchval(
            "SELECT locked_until FROM staff WHERE username = 'agent'"
        )
        assert locked_until is not None
        assert await console.pool.fetchval(
            "SELECT locked_until > now() + interval '14 minutes'"
            " FROM staff WHERE username = 'agent'"
        )
        # The other accounts are not affected.
        async with console.browser() as other:
            assert (await log_in(other, "admin", ADMIN_PASSWORD)).status == 303
        # The lock ends.
        await console.pool.execute(
            "UPDATE staff SET locked_until = now() - interval '1 second' WHERE username = 'agent'"
        )
        assert (await log_in(browser, "agent", AGENT_PASSWORD)).status == 303
        row = await console.pool.fetchrow(
            "SELECT failed_logins, locked_until FROM staff WHERE username = 'agent'"
        )
        assert (row["failed_logins"], row["locked_until"]) == (0, None)


async def test_a_right_password_resets_the_count(console: Console) -> None:
    async with console.browser() as browser:
        for _ in range(4):
            assert (await log_in(browser, "agent", "wrong-password")).status == 401
        assert (await log_in(browser, "agent", AGENT_PASSWORD)).status == 303
    async with console.browser() as browser:
        for _ in range(4):
            assert (await log_in(browser, "agent", "wrong-password")).status == 401
        assert (await log_in(browser, "agent", AGENT_PASSWORD)).status == 303


async def test_admin_pages_are_for_admins(console: Console) -> None:
    async with console.browser() as agent:
        assert (await log_in(agent, "agent", AGENT_PASSWORD)).status == 303
        assert (await status_of(agent, "/staff/admin/staff"))[0] == 403
        assert (await status_of(agent, "/staff/admin/canned"))[0] == 403
        # A valid token of the agent's own session does not help.
        token = await console.pool.fetchval(
            "SELECT csrf_token FROM staff_sessions s JOIN staff m ON m.id = s.staff_id"
            " WHERE m.username = 'agent'"
        )
        new = {"csrf_token": token, "username": "mallory", "role": "admin", "password": "x" * 12}
        async with agent.post("/staff/admin/staff", data=new, allow_redirects=False) as r:
            assert r.status == 403
    async with console.browser() as admin:
        assert (await log_in(admin, "admin", ADMIN_PASSWORD)).status == 303
        token = await token_of(admin, "/staff/admin/canned")
        reply = {"csrf_token": token, "code": "saludo", "body": "Buenos días <b>"}
        async with admin.post("/staff/admin/canned", data=reply, allow_redirects=False) as r:
            assert r.status == 303
        async with admin.get("/staff/admin/canned") as r:
            page = await r.text()
            assert "/saludo" in page
            assert "Buenos días &lt;b&gt;" in page  # autoescaped
        for bad in (
            {"code": "Con Espacio"},
            {"code": "x" * 33},
            {"body": ""},
            {"body": "a" * 4097},
        ):
            async with admin.post(
                "/staff/admin/canned", data=reply | bad, allow_redirects=False
            ) as r:
                assert r.status == 400, bad
                assert 'class="error"' in await r.text()
        async with console.pool.acquire() as conn:
            assert await staff.canned_reply(conn, "saludo") == "Buenos días <b>"
            assert len(await staff.canned_replies(conn)) == 1

        token = await token_of(admin, "/staff/admin/staff")
        member = {
            "csrf_token": token,
            "username": "bea",
            "role": "agent",
            "password": "bea-password-1",
        }
        async with admin.post("/staff/admin/staff", data=member, allow_redirects=False) as r:
            assert r.status == 303
        for bad in (
            {"username": "BEA"},
            {"password": "short"},
            {"role": "owner"},
            {"username": ""},
        ):
            async with admin.post(
                "/staff/admin/staff", data=member | bad, allow_redirects=False
            ) as r:
                assert r.status == 400, bad
        async with admin.post(
            "/staff/admin/staff/bea/role",
            data={"csrf_token": token, "role": "admin"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
        async with admin.post(
            "/staff/admin/staff/admin/active",
            data={"csrf_token": token, "active": "0"},
            allow_redirects=False,
        ) as r:
            assert r.status == 400  # not one's own account
    async with console.browser() as bea:
        assert (await log_in(bea, "bea", "bea-password-1")).status == 303
        assert (await status_of(bea, "/staff/admin/staff"))[0] == 200


def _cli_env(database_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WHATSAPP_", "DATABASE_", "STAFF_"))
    }
    env.update(DATABASE_URL=database_url, LOG_LEVEL="WARNING")
    return env


async def staff_cli(database_url: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "staff", *args,
        cwd=ROOT,
        env=_cli_env(database_url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_staff_command_adds_lists_and_disables(console: Console) -> None:
    password = "ana-secret-password"
    code, _, err = await staff_cli(
        console.database_url, "add", "ana", "--role", "agent", stdin=password + "\n"
    )
    assert code == 0, err
    stored = await console.pool.fetchval("SELECT password_hash FROM staff WHERE username = 'ana'")
    assert stored.startswith("$argon2id$")
    assert password not in stored

    code, out, err = await staff_cli(console.database_url, "list")
    assert code == 0, err
    assert re.search(r"^ana\tagent\tactive\t", out, re.M), out

    async with console.browser() as browser:
        assert (await log_in(browser, "ana", password)).status == 303
        assert (await status_of(browser, "/staff/admin/canned"))[0] == 403  # in, as an agent
        code, out, err = await staff_cli(console.database_url, "disable", "ana")
        assert code == 0, err
        # The live session ends at once, and no new one starts.
        status, location = await status_of(browser, "/staff/admin/canned")
        assert (status, urlsplit(location).path) == (303, "/staff/login")
        assert (await log_in(browser, "ana", password)).status == 401
    code, out, _ = await staff_cli(console.database_url, "list")
    assert re.search(r"^ana\tagent\tdisabled\t", out, re.M), out
    # Recorded, with nobody's name: the command line did it.
    changes = await console.pool.fetch(
        "SELECT actor_id, action, subject FROM staff_audit ORDER BY id"
    )
    assert [tuple(c.values()) for c in changes] == [
        (None, "staff_added", "ana"),
        (None, "staff_disabled", "ana"),
    ]

    # Never a password in the arguments; never a short one.
    code, _, err = await staff_cli(
        console.database_url, "add", "bob", "--role", "agent", "bob-secret-password"
    )
    assert code == 2
    assert "unrecognized arguments" in err
    code, _, err = await staff_cli(
        console.database_url, "add", "bob", "--role", "agent", "--password", "bob-secret-pw"
    )
    assert code == 2
    code, _, err = await staff_cli(
        console.database_url, "add", "bob", "--role", "agent", stdin="short\n"
    )
    assert code == 2
    assert await console.pool.fetchval("SELECT count(*) FROM staff WHERE username = 'bob'") == 0


async def test_the_session_cookie_and_the_security_headers(console: Console) -> None:
    async with console.browser() as browser:
        async with browser.get("/staff/login") as r:
            headers = r.headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"
        token = await token_of(browser, "/staff/login")
        form = {"csrf_token": token, "username": "admin", "password": ADMIN_PASSWORD}
        async with browser.post("/staff/login", data=form, allow_redirects=False) as r:
            assert r.status == 303
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            raw = [v for v in r.headers.getall("Set-Cookie") if v.startswith("staff_session=")]
        assert len(raw) == 1
        cookie = SimpleCookie(raw[0])["staff_session"]
        assert cookie["httponly"]
        assert cookie["samesite"].lower() in ("lax", "strict")
        assert cookie["path"] == "/staff"
        assert int(cookie["max-age"]) == 12 * 3600
        assert not cookie["secure"]  # plain HTTP here; https (or fly's proxy) sets it
        session_id = await console.pool.fetchval("SELECT id FROM staff_sessions")
        assert cookie.value.startswith(f"{session_id}.")  # the row id, signed and dated
        async with browser.get("/staff/admin/staff") as r:
            assert r.status == 200
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            page = await r.text()
        assert "<script>" not in page and "style=" not in page
        async with browser.get("/staff/static/console.css") as r:
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        # A tampered cookie is no session.
        browser.cookie_jar.clear()
        browser.cookie_jar.update_cookies(
            {"staff_session": cookie.value[:-2] + "xx"}, response_url=URL(console.url)
        )
        assert (await status_of(browser, "/staff/admin/staff"))[0] == 303


async def test_logout_ends_the_session(console: Console) -> None:
    async with console.browser() as browser:
        assert (await log_in(browser, "admin", ADMIN_PASSWORD)).status == 303
        cookie = next(c for c in browser.cookie_jar if c.key == "staff_session").value
        token = await token_of(browser, "/staff/admin/staff")
        async with browser.post(
            "/staff/logout", data={"csrf_token": token}, allow_redirects=False
        ) as r:
            assert (r.status, r.headers["Location"]) == (303, "/staff/login")
        assert (await status_of(browser, "/staff/admin/staff"))[0] == 303
    assert await console.pool.fetchval("SELECT revoked_at IS NOT NULL FROM staff_sessions")
    async with console.browser() as replay:
        # The old cookie, kept by someone: it no longer opens anything.
        replay.cookie_jar.update_cookies({"staff_session": cookie}, response_url=URL(console.url))
        status, location = await status_of(replay, "/staff/admin/staff")
        assert (status, urlsplit(location).path) == (303, "/staff/login")
    # An expired session ends too, whatever its cookie says.
    async with console.browser() as browser:
        assert (await log_in(browser, "admin", ADMIN_PASSWORD)).status == 303
        assert (await status_of(browser, "/staff/admin/staff"))[0] == 200
        await console.pool.execute(
            "UPDATE staff_sessions SET expires_at = now() WHERE revoked_at IS NULL"
        )
        assert (await status_of(browser, "/staff/admin/staff"))[0] == 303


async def test_unreadable_input_is_a_400_never_a_login_attempt_or_a_500(
    console: Console,
) -> None:
    async with console.browser() as browser:
        # A NUL in the username, with a valid token: refused as input, not as a login
        # (neither logged in as "admin" nor counted as a wrong password of theirs).
        token = await token_of(browser, "/staff/login")
        form = {"csrf_token": token, "username": "admin\x00", "password": ADMIN_PASSWORD}
        async with browser.post("/staff/login", data=form, allow_redirects=False) as r:
            assert r.status == 400, r.status
        # A body that is not UTF-8 text.
        async with browser.post(
            "/staff/login",
            data=b"username=\xff\xfe&password=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            allow_redirects=False,
        ) as r:
            assert r.status == 400, r.status
        assert (
            await console.pool.fetchval("SELECT failed_logins FROM staff WHERE username = 'admin'")
            == 0
        )
        assert await console.pool.fetchval("SELECT count(*) FROM staff_sessions") == 0

        assert (await log_in(browser, "admin", ADMIN_PASSWORD)).status == 303
        token = await token_of(browser, "/staff/admin/canned")
        async with browser.post(
            "/staff/admin/canned",
            data={"csrf_token": token, "code": "hola", "body": "Hola\x00, ¿qué tal?"},
            allow_redirects=False,
        ) as r:
            assert r.status == 400, r.status
        async with browser.post(
            "/staff/admin/canned",
            data=f"csrf_token={token}&code=hola&body=".encode() + b"\xff\xfe",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            allow_redirects=False,
        ) as r:
            assert r.status == 400, r.status
        async with console.pool.acquire() as conn:
            assert await staff.canned_replies(conn) == []
        # A NUL in a username or code in the URL (percent-encoded as a browser sends it).
        for path in (
            "/staff/admin/staff/%00/active",
            "/staff/admin/staff/agent%00/role",
            "/staff/admin/canned/%00/delete",
        ):
            async with browser.post(
                URL(console.url + path, encoded=True),
                data={"csrf_token": token, "active": "0", "role": "admin"},
                allow_redirects=False,
            ) as r:
                assert r.status == 400, (path, r.status)
        async with browser.get(
            URL(console.url + "/staff/admin/staff/%00", encoded=True), allow_redirects=False
        ) as r:
            assert r.status == 400, r.status
        rows = await console.pool.fetch("SELECT username, role, active FROM staff ORDER BY id")
        assert [tuple(r) for r in rows] == [("admin", "admin", True), ("agent", "agent", True)]
        # Ids past PostgreSQL's bigint (19 digits) are no page, not a database error.
        too_long = "9" * 19
        for path in (
            f"/staff/conversations/{too_long}",
            f"/staff/conversations/{too_long}/transcript",
        ):
            assert (await status_of(browser, path))[0] == 404, path
        for path in (f"/staff/items/{too_long}/claim", f"/staff/conversations/{too_long}/reply"):
            async with browser.post(
                path, data={"csrf_token": token, "text": "hola"}, allow_redirects=False
            ) as r:
                assert r.status == 404, (path, r.status)
        assert (await status_of(browser, f"/staff/live?conversation={too_long}"))[0] == 400


async def test_every_change_to_the_team_and_the_canned_replies_is_recorded_and_shown(
    console: Console,
) -> None:
    admin_id = await console.pool.fetchval("SELECT id FROM staff WHERE username = 'admin'")
    async with console.browser() as admin:
        assert (await log_in(admin, "admin", ADMIN_PASSWORD)).status == 303
        token = await token_of(admin, "/staff/admin/staff")
        posts = [
            ("/staff/admin/staff", {"username": "beto", "role": "agent", "password": "b" * 12}),
            ("/staff/admin/staff/beto/role", {"role": "admin"}),
            ("/staff/admin/staff/beto/active", {"active": "0"}),
            ("/staff/admin/canned", {"code": "saludo", "body": "Hola, ¿en qué le ayudo?"}),
            ("/staff/admin/canned/saludo/delete", {}),
            # Refused changes are not recorded.
            ("/staff/admin/staff/nadie/active", {"active": "0"}),
            ("/staff/admin/staff/admin/active", {"active": "0"}),
        ]
        for path, form in posts:
            async with admin.post(
                path, data={"csrf_token": token, **form}, allow_redirects=False
            ) as r:
                await r.read()
        async with admin.get("/staff/admin/staff") as r:
            team_page = await r.text()
        async with admin.get("/staff/admin/canned") as r:
            canned_page = await r.text()
    changes = await console.pool.fetch(
        "SELECT actor_id, action, subject, detail FROM staff_audit ORDER BY id"
    )
    assert [(c["actor_id"], c["action"], c["subject"]) for c in changes] == [
        (admin_id, "staff_added", "beto"),
        (admin_id, "role_changed", "beto"),
        (admin_id, "staff_disabled", "beto"),
        (admin_id, "canned_saved", "saludo"),
        (admin_id, "canned_deleted", "saludo"),
    ]
    assert [c["detail"].get("role") for c in changes[:2]] == ["agent", "admin"]
    for said in ("agregó a beto", "cambió el rol de beto", "desactivó a beto"):
        assert said in team_page
    assert "guardó /saludo" in canned_page and "borró /saludo" in canned_page
    assert "agregó a beto" not in canned_page


async def test_a_new_password_unlocks_the_account_and_ends_its_sessions(console: Console) -> None:
    """An admin (or the command line) gives a member a new password: the old one stops
    working, a lock ends, and a session opened with the old one is over."""
    async with console.browser() as agent, console.browser() as admin:
        assert (await log_in(agent, "agent", AGENT_PASSWORD)).status == 303
        assert (await status_of(agent, "/staff/"))[0] == 200
        await console.pool.execute(
            "UPDATE staff SET locked_until = now() + interval '1 hour' WHERE username = 'agent'"
        )
        assert (await log_in(admin, "admin", ADMIN_PASSWORD)).status == 303
        token = await token_of(admin, "/staff/admin/staff")
        for password, status in (("corta", 400), ("una clave nueva larga", 303)):
            async with admin.post(
                "/staff/admin/staff/agent/password",
                data={"csrf_token": token, "password": password},
                allow_redirects=False,
            ) as r:
                assert r.status == status, password
        status, location = await status_of(agent, "/staff/")
        assert (status, urlsplit(location).path) == (303, "/staff/login")
    async with console.browser() as agent:
        assert (await log_in(agent, "agent", AGENT_PASSWORD)).status == 401
        assert (await log_in(agent, "agent", "una clave nueva larga")).status == 303

    code, _, err = await staff_cli(
        console.database_url, "password", "agent", stdin="otra clave bien larga\n"
    )
    assert code == 0, err
    async with console.browser() as agent:
        assert (await log_in(agent, "agent", "una clave nueva larga")).status == 401
        assert (await log_in(agent, "agent", "otra clave bien larga")).status == 303
    code, _, err = await staff_cli(console.database_url, "password", "nadie", stdin="x" * 12)
    assert code == 1
    changes = await console.pool.fetch(
        "SELECT actor_id IS NULL AS cli, action, subject FROM staff_audit ORDER BY id"
    )
    assert [tuple(c.values()) for c in changes] == [
        (False, "password_set", "agent"),
        (True, "password_set", "agent"),
    ]
    stored = await console.pool.fetchval("SELECT password_hash FROM staff WHERE username = 'agent'")
    assert stored.startswith("$argon2id$") and "otra clave" not in stored
