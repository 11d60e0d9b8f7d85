"""The phone simulator in a real headless Chromium: pick a customer, write, tap a list."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from bot.config import Settings
from bot.sandbox import UNKNOWN_WA_ID, Sandbox
from flows.catalog import default_catalog
from store import db
from tests.browser import require_chromium
from tests.conftest import create_database, drop_database, dsn_for, reset
from tests.procs import sandbox_command, sandbox_env

CATALOG = default_catalog()
REPLY_TIMEOUT_MS = 15_000

pytestmark = pytest.mark.timeout(120)

require_chromium("the sandbox's browser tests")

from playwright.async_api import Browser, Page, expect  # noqa: E402


@pytest.fixture
async def sandbox(database_url: str) -> AsyncIterator[Sandbox]:
    pool = await db.create_pool(database_url, min_size=1, max_size=2)
    try:
        await reset(pool)
    finally:
        await pool.close()
    async with Sandbox(Settings(database_url=database_url, log_json=False), port=0) as running:
        yield running


async def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    await page.goto(url)
    return page


async def test_the_sandbox_command_answers_a_greeting_typed_in_its_page(browser: Browser) -> None:
    """What a person does after `make sandbox`: the real command, its page in Chromium."""
    name = await create_database()
    try:
        env = sandbox_env(DATABASE_URL=dsn_for(name), DATA_DIR="/nonexistent")
        async with sandbox_command(env, startup_timeout=40) as running:
            errors: list[str] = []
            page = await open_page(browser, f"{running.url}/sandbox/", errors)
            await page.get_by_role("button", name=re.compile("Juan Perez")).click()
            box = page.get_by_label("Mensaje")
            await box.fill("Hola")
            await box.press("Enter")
            last_bot = page.locator(".bubble.bot").last
            for line in filter(None, CATALOG.text("menu.body", name="Juan").split("\n")):
                await expect(last_bot).to_contain_text(line, timeout=REPLY_TIMEOUT_MS)
            await page.close()
            assert errors == []
    finally:
        await drop_database(name)


async def test_customer_gets_the_menu_and_the_questions(sandbox: Sandbox, browser: Browser) -> None:
    errors: list[str] = []
    page = await open_page(browser, sandbox.urls()["sandbox"], errors)
    await page.get_by_role("button", name=re.compile("Juan Perez")).click()

    box = page.get_by_label("Mensaje")
    await box.fill("Hola")
    await box.press("Enter")

    await expect(page.locator(".bubble.me").last).to_have_text(
        re.compile("^Hola"), timeout=REPLY_TIMEOUT_MS
    )
    menu_text = CATALOG.text("menu.body", name="Juan")
    last_bot = page.locator(".bubble.bot").last
    for line in filter(None, menu_text.split("\n")):
        await expect(last_bot).to_contain_text(line, timeout=REPLY_TIMEOUT_MS)
    # The bot handled the greeting: under it, two blue ticks, as a phone shows a read message.
    read = page.locator(".bubble.me").last.get_by_role("img", name="Leído: el bot lo procesó")
    await expect(read).to_have_text("✓✓", timeout=REPLY_TIMEOUT_MS)
    await expect(read).to_have_css("color", "rgb(83, 189, 235)")
    list_button = page.get_by_role("button", name=CATALOG.text("menu.button"), exact=True)
    await expect(list_button).to_be_visible()
    assert await box.input_value() == ""

    await list_button.click()
    faq_row = page.get_by_role("button", name=CATALOG.text("menu.options.faq.title"))
    await expect(faq_row).to_be_visible()
    await expect(page.get_by_role("dialog")).to_contain_text(
        CATALOG.text("menu.options.upgrade.title")
    )
    await faq_row.click()
    await expect(page.get_by_role("dialog")).to_be_hidden()

    await expect(page.locator(".bubble.me").last).to_contain_text(
        CATALOG.text("menu.options.faq.title"), timeout=REPLY_TIMEOUT_MS
    )
    await expect(page.locator(".bubble.bot").last).to_contain_text(
        CATALOG.text("faq.body"), timeout=REPLY_TIMEOUT_MS
    )
    questions = page.get_by_role("button", name=CATALOG.text("faq.button"), exact=True)
    await expect(questions).to_be_visible()
    await questions.click()
    dialog = page.get_by_role("dialog")
    for topic in ("downgrade", "backups", "domains"):
        await expect(dialog).to_contain_text(CATALOG.text(f"faq.{topic}.title"))
        await expect(dialog).to_contain_text(CATALOG.text(f"faq.{topic}.description"))

    await page.get_by_role("button", name=CATALOG.text("faq.backups.title")).click()
    await expect(page.locator(".bubble.bot").last).to_contain_text(
        CATALOG.text("faq.after_answer"), timeout=REPLY_TIMEOUT_MS
    )
    # Reply buttons are tappable, and *bold* in the answer is rendered bold.
    answer = page.locator(".bubble.bot").nth(-2)
    await expect(answer.locator("strong")).to_have_text("10 años")
    await page.get_by_role("button", name=CATALOG.text("common.back_to_menu")).last.click()
    await expect(page.locator(".bubble.bot").last).to_contain_text(
        menu_text.split("\n")[0], timeout=REPLY_TIMEOUT_MS
    )
    assert errors == []


async def test_message_text_is_never_markup(sandbox: Sandbox, browser: Browser) -> None:
    errors: list[str] = []
    page = await open_page(browser, sandbox.urls()["sandbox"], errors)
    await page.get_by_role("button", name=re.compile("Jose Garcia")).click()
    hostile = '<img src=x onerror="window.pwned=1"> <b>no</b> *sí*'
    box = page.get_by_label("Mensaje")
    await box.fill(hostile)
    await page.get_by_role("button", name="Enviar", exact=True).click()

    mine = page.locator(".bubble.me").last
    await expect(mine).to_contain_text('<img src=x onerror="window.pwned=1"> <b>no</b> sí')
    await expect(mine.locator("strong")).to_have_text("sí")
    assert await page.locator("#chat img, #chat b").count() == 0
    assert await page.evaluate("window.pwned === undefined")
    # The bot answers it somehow (it did not understand): the page keeps working.
    await expect(page.locator(".bubble.bot").last).to_be_visible(timeout=REPLY_TIMEOUT_MS)
    assert errors == []


async def test_unknown_number_and_a_sticker(sandbox: Sandbox, browser: Browser) -> None:
    errors: list[str] = []
    page = await open_page(browser, sandbox.urls()["sandbox"], errors)
    await page.get_by_role("button", name=re.compile(UNKNOWN_WA_ID)).click()
    await page.get_by_label("Mensaje").fill("Hola")
    await page.get_by_label("Mensaje").press("Enter")
    first_line = CATALOG.text(
        "identity.unknown", panel_url=sandbox.settings.panel_details_url
    ).split("\n")[0]
    await expect(page.locator(".bubble.bot").last).to_contain_text(
        first_line, timeout=REPLY_TIMEOUT_MS
    )
    link = page.locator(".bubble.bot").last.locator("a")
    await expect(link).to_have_attribute("href", sandbox.settings.panel_details_url)

    await page.get_by_role("button", name="Enviar un sticker").click()
    unsupported = CATALOG.text("common.unsupported").replace("*", "")
    await expect(page.locator(".bubble.bot").last).to_have_text(
        re.compile(re.escape(unsupported)), timeout=REPLY_TIMEOUT_MS
    )
    assert errors == []


async def test_billing_panel_pays_an_invoice_and_shows_the_events(
    sandbox: Sandbox, browser: Browser
) -> None:
    errors: list[str] = []
    page = await open_page(browser, sandbox.urls()["sandbox"], errors)
    await page.get_by_role("button", name=re.compile("Lucía Fernández")).click()

    panel = page.get_by_role("region", name="Facturación", exact=True)
    invoice = panel.locator('tr[data-invoice-id="demo-i-1004"]')
    await expect(invoice).to_contain_text("impaga")
    await expect(invoice).to_contain_text("8.00 $")
    service = panel.locator('[data-service-id="demo-s-lucia-clasicos"]')
    await expect(service).to_contain_text("suspendido")
    events = page.get_by_role("region", name="Eventos de facturación (se envían como alertas)")
    await expect(events).to_contain_text("Todavía no hay eventos")

    await panel.get_by_role("button", name="Pagar factura demo-i-1004").click()
    await expect(invoice).to_contain_text("pagada")
    await expect(invoice.get_by_role("button")).to_have_count(0)
    await expect(service).to_contain_text("activo")
    paid = events.locator('[data-event-type="invoice.paid"]')
    await expect(paid).to_have_count(1)
    await expect(paid).to_contain_text("Pago de factura")
    await expect(paid).to_contain_text("factura demo-i-1004")
    await expect(events.locator('[data-event-type="service.unsuspended"]')).to_have_count(1)
    # The customer's card on the left follows.
    card = page.get_by_role("button", name=re.compile("Lucía Fernández"))
    await expect(card).not_to_contain_text("suspendido")

    # A bad total is refused with the reason; a good one makes a quote and its event.
    await panel.get_by_label("Total ($)").fill("diez")
    await panel.get_by_role("button", name="Crear presupuesto").click()
    await expect(panel.get_by_role("alert")).to_contain_text("total")
    await panel.get_by_label("Total ($)").fill("45,50")
    await panel.get_by_label("Asunto").fill("Migración del sitio")
    await panel.get_by_role("button", name="Crear presupuesto").click()
    quote = events.locator('[data-event-type="quote.created"]')
    await expect(quote).to_contain_text("45.50 $")
    await expect(quote).to_contain_text("Migración del sitio")
    await expect(panel.get_by_role("alert")).to_be_hidden()

    # The unknown number has no account, so no billing.
    await page.get_by_role("button", name=re.compile(UNKNOWN_WA_ID)).click()
    await expect(panel).to_contain_text("no está en ninguna cuenta")
    await expect(panel.get_by_role("button", name=re.compile("^Pagar"))).to_have_count(0)
    # Chromium logs every 4xx answer to fetch: only the refused quote's is expected.
    assert [e for e in errors if "status of 400" not in e] == []
    assert len(errors) == 1
