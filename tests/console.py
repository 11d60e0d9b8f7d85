"""A logged-in staff member's browser for the console tests (their fixtures `stack`,
`members` and `clients` are in conftest), and a customer asking for a person."""

from __future__ import annotations

import html
import re

import aiohttp
import asyncpg

from flows.catalog import default_catalog
from tests.billing_fixture import JUAN_WA
from tests.harness import Stack, text_of

CATALOG = default_catalog()
PASSWORD = "una clave bastante larga"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class StaffClient:
    """One member's logged-in session: its own cookies, the CSRF token from the pages."""

    def __init__(self, stack: Stack) -> None:
        self.url = stack.url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.token = ""

    async def close(self) -> None:
        await self.session.close()

    async def login(self, username: str, password: str = PASSWORD) -> None:
        page = await self.get("/staff/login")
        async with self.session.post(
            f"{self.url}/staff/login",
            data={"username": username, "password": password, "csrf_token": self.token},
        ) as r:
            body = await r.text()
            assert r.status == 200 and r.url.path == "/staff/", (r.status, body[:300])
        self._remember(body)
        assert page

    async def get(self, path: str, status: int = 200) -> str:
        async with self.session.get(f"{self.url}{path}") as r:
            body = await r.text()
            assert r.status == status, (path, r.status, body[:500])
        self._remember(body)
        return body

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, follow: bool = True
    ) -> tuple[int, str, str]:
        """(status, final path, body)."""
        form = {"csrf_token": self.token, **(data or {})}
        async with self.session.post(f"{self.url}{path}", data=form, allow_redirects=follow) as r:
            body = await r.text()
            where = r.headers.get("Location", "") if not follow else r.url.path
            self._remember(body)
            return r.status, where, body

    def _remember(self, body: str) -> None:
        found = _TOKEN.search(body)
        if found:
            self.token = html.unescape(found.group(1))


async def logged_in(stack: Stack, clients: list[StaffClient], username: str) -> StaffClient:
    client = StaffClient(stack)
    clients.append(client)
    await client.login(username)
    return client


async def asks_for_a_person(stack: Stack, pool: asyncpg.Pool, wa_id: str) -> asyncpg.Record:
    """The customer types `asesor`; the bot hands them over. Their item."""
    before = len(stack.fake.messages(to=wa_id))
    await stack.say(wa_id, "asesor", name="Juan" if wa_id == JUAN_WA else "Cliente")
    [*_, handover] = await stack.replies(before + 1, to=wa_id)
    assert text_of(handover) == CATALOG.text("menu.handed_over")
    item = await pool.fetchrow(
        """
        SELECT e.* FROM escalations AS e JOIN conversations AS c ON c.id = e.conversation_id
        WHERE c.wa_id = $1 AND e.status <> 'resolved'
        """,
        wa_id,
    )
    assert item is not None
    return item
