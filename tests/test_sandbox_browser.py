"""The phone simulator in a real headless Chromium: pick a customer, write, tap a list."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.sandbox import UNKNOWN_WA_ID, Sandbox
from flows.catalog import default_catalog
from store import db
from tests.conftest import reset

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CATALOG = default_catalog()
REPLY_TIMEOUT_MS = 15_000

pytestmark = pytest.mark.timeout(120)

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium package to run the browser tests",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402


@pytest.fixture
async def sandbox(database_url: str) -> AsyncIterator[Sandbox]:
    pool = await db.create_pool(database_url, min_size=1, max_size=2)
    try:
        await reset(pool)
    finally:
        await pool.close()
    async with Sandbox(Settings(database_url=database_url, log_json=False), port=0) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Browser, sandbox: Sandbox, errors: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    await page.goto(sandbox.urls()["sandbox"])
    return page


async def test_customer_gets_the_menu_and_the_questions(sandbox: Sandbox, browser: Browser) -> None:
    errors: list[str] = []
    page = await open_page(browser, sandbox, errors)
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
    page = await open_page(browser, sandbox, errors)
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
    page = await open_page(browser, sandbox, errors)
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
