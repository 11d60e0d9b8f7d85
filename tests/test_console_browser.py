"""The staff console in a real headless Chromium, on a phone-sized screen: log in, see a
customer's request arrive without reloading, claim it, answer, resolve; the customer gets
the answer once and the bot back afterwards. No CSP violation on the way."""

from __future__ import annotations

import asyncpg
import pytest

from bot.console.auth import hash_password
from flows.catalog import default_catalog
from store import staff
from tests.billing_fixture import JUAN_WA
from tests.browser import require_chromium
from tests.harness import Stack, sender_idle, text_of

CATALOG = default_catalog()
PASSWORD = "una clave bastante larga"
WAIT_MS = 15_000

pytestmark = pytest.mark.timeout(90)

require_chromium("the console's browser test")

from playwright.async_api import Browser, ConsoleMessage, expect  # noqa: E402


def console_error(message: ConsoleMessage) -> list[str]:
    """Any error the page logs (a CSP violation, a failed fetch, a 404) fails the test."""
    return [message.text] if message.type == "error" else []


async def test_staff_take_a_request_answer_once_and_give_it_back(
    pool: asyncpg.Pool, database_url: str, browser: Browser
) -> None:
    async with pool.acquire() as conn:
        await staff.add_staff(conn, "ana", "agent", hash_password(PASSWORD))
    # Exact send counts are the point: Meta's awkward habits are the sender's tests' job.
    async with Stack(database_url, awkward=None) as stack:
        errors: list[str] = []
        context = await browser.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        )
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.extend(console_error(message)))

        await page.goto(f"{stack.url}/staff/")
        await page.get_by_label("Usuario").fill("ana")
        await page.get_by_label("Contraseña").fill(PASSWORD)
        await page.get_by_role("button", name="Ingresar").click()
        await expect(page.get_by_role("heading", name="Cola de atención")).to_be_visible()
        await expect(page.locator(".queue-item")).to_have_count(0)
        await page.evaluate("window.stillTheSamePage = true")

        # A customer asks for a person: the item shows up on the open page by itself.
        await stack.say(JUAN_WA, "asesor", name="Juan")
        item = page.locator(".queue-item")
        await expect(item).to_have_count(1, timeout=WAIT_MS)
        await expect(item).to_contain_text("Pidió una persona")
        await expect(item).to_contain_text("Juan (+5491155551234)")
        await expect(page.locator('[data-view="all"] .count')).to_have_text("1")
        assert await page.evaluate("window.stillTheSamePage === true")

        await item.get_by_role("link").click()
        await expect(page.get_by_role("heading", name="Juan (+5491155551234)")).to_be_visible()
        work = page.locator("#work")
        await expect(work).to_contain_text("El bot está en silencio")
        await work.get_by_role("button", name="Tomar").click()
        await expect(work.locator(".item .badge.status-open")).to_be_visible()
        await expect(work.locator(".log")).to_contain_text("ana tomó el pedido")

        answer = "Hola Juan, soy Ana. ¿En qué le ayudo?"
        await page.get_by_label("Mensaje").fill(answer)
        await page.get_by_role("button", name="Enviar", exact=True).dblclick()
        transcript = page.locator("#transcript")
        await expect(transcript.locator(".msg-staff")).to_contain_text(answer, timeout=WAIT_MS)
        await expect(transcript.locator(".msg-staff .msg-who")).to_have_text("ana")
        await stack.replies(2, to=JUAN_WA)
        await sender_idle(pool)
        sent = [text_of(m) for m in stack.fake.messages(to=JUAN_WA)]
        assert sent == [CATALOG.text("menu.handed_over"), answer]
        # The fake's statuses come back as ticks, without a reload.
        await expect(transcript.locator(".msg-staff .tick")).to_have_text("✓", timeout=WAIT_MS)

        # The customer writes back: it shows on the open conversation.
        await page.evaluate("window.stillTheSamePage = true")
        await stack.say(JUAN_WA, "Quiero pasar a un plan más grande", name="Juan")
        await expect(transcript.locator(".msg-in").last).to_contain_text(
            "Quiero pasar a un plan más grande", timeout=WAIT_MS
        )
        assert await page.evaluate("window.stillTheSamePage === true")
        await sender_idle(pool)
        assert len(stack.fake.messages(to=JUAN_WA)) == 2  # the bot stays silent

        await work.get_by_role("button", name="Resolver").click()
        await expect(page.locator("#reply")).to_contain_text("No hay ningún pedido abierto")
        [*_, told] = await stack.replies(3, to=JUAN_WA)
        assert text_of(told) == CATALOG.text("handover.handed_back.text")

        await stack.say(JUAN_WA, "hola", name="Juan")
        [*_, menu] = await stack.replies(4, to=JUAN_WA)
        assert text_of(menu) == CATALOG.text("menu.body", name="Juan")
        await sender_idle(pool)
        assert [text_of(m) for m in stack.fake.messages(to=JUAN_WA)].count(answer) == 1

        await context.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
    assert errors == []
