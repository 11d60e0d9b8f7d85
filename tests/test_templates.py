"""The alerts' WhatsApp templates (bot/templates.py): `python -m bot templates export`
gives Meta's template-creation JSON for the 11 alerts, `problems()` holds Meta's creation
rules (each shown able to fail), and the fake Cloud API refuses a template send the way
Meta does when the template does not exist, is paused or gets the wrong parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.fakes.cloud_api import FakeCloudAPI
from bot.templates import TEMPLATE_KEYS, definitions, param_counts, problems
from bot.wa_client import _graph_message
from flows.alerts import ALERT_TYPES, alert
from flows.billing import Client, EventFacts
from flows.catalog import default_catalog
from flows.outbound import Template

ROOT = Path(__file__).resolve().parents[1]
PANEL = "https://panel.example.com"
PHONE_ID = "1234567890"
TOKEN = "test-token"
CUSTOMER = "5491155550001"
SENDS = f"/v23.0/{PHONE_ID}/messages"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def export(*args: str, panel_url: str = PANEL + "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "templates", "export", *args],
        cwd=ROOT,
        env=dict(os.environ, PANEL_URL=panel_url, LOG_FORMAT="text"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def raw(key: str) -> Any:
    return default_catalog().raw(key)


# --- the export command ----------------------------------------------------------------


def test_export_gives_every_alert_template_as_the_catalog_has_them(
    tmp_path: Path,
) -> None:
    printed = export()
    assert printed.returncode == 0, printed.stderr
    found = json.loads(printed.stdout)

    # The 11 event types', an upgrade's invoice paid and voided, a transfer expired, a
    # staff follow-up and a person's hand-back after the 24 h window.
    assert len(found) == len(TEMPLATE_KEYS) == 16
    for base, definition in zip(TEMPLATE_KEYS, found, strict=True):
        assert problems(definition) == [], definition["name"]
        assert definition["name"] == raw(f"{base}.template")
        assert (definition["language"], definition["category"]) == ("es", "UTILITY")
        kinds = [c["type"] for c in definition["components"]]
        body = definition["components"][0]
        assert body["type"] == "BODY"
        # The body as written, {{1}} and all (never through str.format).
        assert body["text"] == raw(f"{base}.template_body")
        assert "{{1}}" in body["text"]
        assert body["example"]["body_text"] == [raw(f"{base}.examples")]
        params = raw(f"{base}.params")
        assert len(params) == len(raw(f"{base}.examples"))
        expected_buttons = 1 if default_catalog().has(f"{base}.button.param") else 0
        assert param_counts(default_catalog())[definition["name"]] == (
            len(params),
            expected_buttons,
        )
        footer = definition["components"][1]
        assert footer == {"type": "FOOTER", "text": raw("alerts.template_footer")}
        if default_catalog().has(f"{base}.button.url"):
            assert kinds == ["BODY", "FOOTER", "BUTTONS"]
            [button] = definition["components"][2]["buttons"]
            assert button["type"] == "URL"
            assert button["text"] == raw(f"{base}.button.text")
            assert button["url"] == f"{PANEL}/{raw(f'{base}.button.url')}"
        else:
            assert kinds == ["BODY", "FOOTER"]

    # --out writes the same JSON to a file, nothing on stdout.
    out = tmp_path / "templates.json"
    written = export("--out", str(out))
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    assert json.loads(out.read_text(encoding="utf-8")) == found
    assert "Bienvenido/a" in out.read_text(encoding="utf-8")  # not \u-escaped


def test_the_url_button_example_is_the_panel_url_and_the_example() -> None:
    by_name = {d["name"]: d for d in json.loads(export().stdout)}

    [button] = by_name["factura_generada"]["components"][2]["buttons"]
    assert button == {
        "type": "URL",
        "text": "Ver factura",
        "url": f"{PANEL}/viewinvoice.php?id={{{{1}}}}",
        "example": [f"{PANEL}/viewinvoice.php?id=1234"],
    }
    [quote] = by_name["presupuesto_disponible"]["components"][2]["buttons"]
    assert quote["example"] == [f"{PANEL}/viewquote.php?id=57"]
    # A fixed URL has no variable and no example.
    [panel] = by_name["bienvenida_cliente"]["components"][2]["buttons"]
    assert panel == {"type": "URL", "text": "Ir al panel", "url": f"{PANEL}/clientarea.php"}


def test_export_refuses_templates_meta_would_reject() -> None:
    # Meta takes only https URL buttons: a plain-http panel breaks every button.
    refused = export(panel_url="http://panel.example.com")

    assert refused.returncode == 1
    assert refused.stdout == ""
    assert "nothing was exported" in refused.stderr
    assert "factura_generada: button url 'http://panel.example.com/viewinvoice.php?id={{1}}'" in (
        refused.stderr
    )


# --- Meta's creation rules, each able to fail -----------------------------------------


def valid() -> dict[str, Any]:
    """factura_generada: four body parameters, a footer and a URL button with a variable."""
    [definition] = [
        d for d in definitions(default_catalog(), PANEL) if d["name"] == "factura_generada"
    ]
    return copy.deepcopy(definition)


def body(d: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in d["components"] if c["type"] == "BODY")


def footer(d: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in d["components"] if c["type"] == "FOOTER")


def button(d: dict[str, Any]) -> dict[str, Any]:
    buttons: list[dict[str, Any]] = next(c for c in d["components"] if c["type"] == "BUTTONS")[
        "buttons"
    ]
    return buttons[0]


def set_body(text: str, examples: list[str] | None = None) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        body(d)["text"] = text
        if examples is not None:
            body(d)["example"] = {"body_text": [examples]}

    return change


ONE = ["Juan"]
TWO = ["Juan", "1234"]

BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("name-513", lambda d: d.update(name="a" * 513), "1 to 512"),
    ("name-empty", lambda d: d.update(name=""), "1 to 512"),
    ("name-uppercase", lambda d: d.update(name="Factura_generada"), "lowercase"),
    ("name-hyphen", lambda d: d.update(name="factura-generada"), "lowercase"),
    ("language", lambda d: d.update(language="spanish"), "language"),
    ("language-missing", lambda d: d.pop("language"), "language"),
    ("category", lambda d: d.update(category="TRANSACTIONAL"), "category"),
    ("no-components", lambda d: d.update(components={}), "components"),
    ("no-body", lambda d: d["components"].pop(0), "no BODY"),
    ("two-footers", lambda d: d["components"].append(dict(footer(d))), "2 FOOTER"),
    ("header", lambda d: d["components"].append({"type": "HEADER"}), "HEADER"),
    ("body-empty", set_body(" "), "body is empty"),
    ("body-1025", set_body("Hola {{1}}, " + "x" * 1012 + ".", ONE), "at most 1024"),
    ("params-gap", set_body("Hola {{1}}, factura {{3}}.", TWO), "in sequence"),
    ("params-from-2", set_body("Hola {{2}}, factura {{3}}.", TWO), "in sequence"),
    ("param-named", set_body("Hola {{1}}, factura {{id}}.", TWO), "not a number"),
    ("starts-with-param", set_body("{{1}}, su factura {{2}} está lista.", TWO), "starts"),
    ("ends-with-param", set_body("Hola {{1}}, su factura es la {{2}}", TWO), "ends"),
    ("ends-with-param-and-blank", set_body("Hola {{1}}, factura {{2}} \n", TWO), "ends"),
    ("adjacent-params", set_body("Hola {{1}} {{2}}, gracias.", TWO), "side by side"),
    ("adjacent-params-touching", set_body("Hola {{1}}{{2}}, gracias.", TWO), "side by side"),
    ("format-mangled", set_body("Hola {1}, su factura {{1}} está lista.", ONE), "brace"),
    ("examples-too-few", lambda d: body(d)["example"]["body_text"][0].pop(), "4 parameters but 3"),
    ("examples-too-many", lambda d: body(d)["example"]["body_text"][0].append("x"), "but 5"),
    ("examples-missing", lambda d: body(d).pop("example"), "example.body_text"),
    ("example-blank", lambda d: body(d)["example"]["body_text"][0].__setitem__(0, " "), "example"),
    ("example-without-params", set_body("Hola, su factura está lista."), "no parameters"),
    ("footer-61", lambda d: footer(d).update(text="f" * 61), "at most 60"),
    ("footer-param", lambda d: footer(d).update(text="Hola {{1}}."), "footer has a parameter"),
    ("footer-empty", lambda d: footer(d).update(text=""), "footer is empty"),
    ("button-text-26", lambda d: button(d).update(text="b" * 26), "at most 25"),
    ("button-text-empty", lambda d: button(d).update(text=""), "button text is empty"),
    (
        "two-url-buttons",
        lambda d: d["components"][2]["buttons"].append(dict(button(d))),
        "at most 1 URL button",
    ),
    (
        "quick-reply",
        lambda d: d["components"][2].update(buttons=[{"type": "QUICK_REPLY", "text": "Baja"}]),
        "only URL buttons",
    ),
    ("no-buttons", lambda d: d["components"][2].update(buttons=[]), "no buttons"),
    ("url-http", lambda d: button(d).update(url="http://panel.example.com/x"), "https"),
    ("url-relative", lambda d: button(d).update(url="viewinvoice.php"), "https"),
    ("url-2001", lambda d: button(d).update(url=PANEL + "/" + "u" * 1975), "at most 2000"),
    (
        "url-two-variables",
        lambda d: button(d).update(url=PANEL + "/i.php?id={{1}}&x={{2}}"),
        "more than one variable",
    ),
    (
        "url-variable-inside",
        lambda d: button(d).update(url=PANEL + "/{{1}}/view", example=[PANEL + "/1/view"]),
        "at its very end",
    ),
    (
        "url-variable-2",
        lambda d: button(d).update(url=PANEL + "/i.php?id={{2}}"),
        "at its very end",
    ),
    ("url-example-missing", lambda d: button(d).pop("example"), "full sample URL"),
    (
        "url-example-elsewhere",
        lambda d: button(d).update(example=["https://other.example.com/viewinvoice.php?id=1"]),
        "full sample URL",
    ),
    (
        "url-example-not-filled",
        lambda d: button(d).update(example=[button(d)["url"]]),
        "full sample URL",
    ),
    (
        "url-example-without-variable",
        lambda d: button(d).update(url=PANEL + "/clientarea.php"),
        "example but its url no variable",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [(c, e) for _, c, e in BROKEN], ids=[i for i, _, _ in BROKEN]
)
def test_problems_catches_each_broken_rule(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    assert problems(valid()) == []
    definition = valid()
    change(definition)

    found = problems(definition)

    assert any(expected in p for p in found), found


def test_templates_at_the_limits_pass() -> None:
    definition = valid()
    definition["name"] = "a" * 512
    definition["language"] = "es_AR"
    body(definition)["text"] = "Hola {{1}}, " + "x" * 1011 + "."
    body(definition)["example"] = {"body_text": [["Juan"]]}
    footer(definition)["text"] = "f" * 60
    button(definition)["text"] = "b" * 25
    assert len(body(definition)["text"]) == 1024

    assert problems(definition) == []


@pytest.mark.parametrize("category", ["UTILITY", "MARKETING", "AUTHENTICATION"])
def test_the_three_categories_pass(category: str) -> None:
    definition = valid()
    definition["category"] = category
    assert problems(definition) == []


def test_a_template_without_parameters_needs_no_example() -> None:
    definition = valid()
    body(definition)["text"] = "Su factura está lista."
    del body(definition)["example"]
    button(definition)["url"] = PANEL + "/clientarea.php"
    del button(definition)["example"]

    assert problems(definition) == []


# --- the fake Cloud API knows which templates exist -----------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeCloudAPI]:
    async with FakeCloudAPI(phone_id=PHONE_ID, token=TOKEN, seed=1) as api:
        yield api


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def send(
    http: aiohttp.ClientSession, fake: FakeCloudAPI, template: Template
) -> tuple[int, Any]:
    """`template` sent as the bot's WhatsApp client words it."""
    typ, obj = _graph_message(template)
    payload = {"messaging_product": "whatsapp", "to": CUSTOMER, "type": typ, typ: obj}
    async with http.post(fake.base_url + SENDS, json=payload, headers=AUTH) as response:
        return response.status, await response.json()


INVOICE = Template("factura_generada", "es", ("Juan", "1234", "$ 100,00", "15/1/2027"), ("1234",))


async def test_a_correct_template_send_is_accepted(
    fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    status, answer = await send(http, fake, INVOICE)

    assert status == 200, answer
    assert answer["messages"][0]["message_status"] == "accepted"
    [sent] = fake.sent
    assert sent.body["template"]["name"] == "factura_generada"


async def test_every_alert_as_the_bot_builds_it_is_accepted(
    fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    client = Client("7", "Juan Pérez", "juan@example.com", verified=True)
    facts = EventFacts(
        invoice_id="1234", total=Decimal("100"), service="juanperez.com.ar", quote_id="57"
    )
    upgrade = dataclasses.replace(facts, upgrade_to="Hosting Pro")
    cases = [(t, facts) for t in ALERT_TYPES]
    cases += [("invoice.paid", upgrade), ("invoice.cancelled", upgrade)]
    for event_type, given in cases:
        reply = alert(default_catalog(), event_type, client, given, PANEL)
        assert reply.template is not None
        status, answer = await send(http, fake, reply.template)
        assert status == 200, (event_type, answer)
    assert len({m.body["template"]["name"] for m in fake.sent}) == len(fake.sent) == 13


@pytest.mark.parametrize(
    ("template", "code", "detail"),
    [
        (Template("factura_inexistente", "es", ("Juan",)), 132001, "(factura_inexistente)"),
        (Template("factura_generada", "es_AR", INVOICE.body_params, ("1",)), 132001, "es_AR"),
        (Template("factura_generada", "es", ("Juan",), ("1234",)), 132000, "body"),
        (Template("factura_generada", "es", INVOICE.body_params), 132000, "button"),
        (
            Template("bienvenida_cliente", "es", ("Juan",), ("1234",)),
            132000,
            "expected number of params (0)",
        ),
    ],
    ids=["unknown-name", "other-language", "body-count", "button-missing", "button-extra"],
)
async def test_a_template_meta_does_not_know_so_is_refused(
    fake: FakeCloudAPI,
    http: aiohttp.ClientSession,
    template: Template,
    code: int,
    detail: str,
) -> None:
    status, answer = await send(http, fake, template)

    assert status == 400
    assert answer["error"]["code"] == code
    assert detail in answer["error"]["error_data"]["details"]
    assert fake.sent == []
    assert [f.code for f in fake.failed_sends] == [code]


async def test_a_paused_template_is_refused_until_resumed(
    fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        fake.base_url + "/_fake/templates", json={"paused": ["factura_generada"]}
    ) as response:
        assert response.status == 200
        assert (await response.json())["paused"] == ["factura_generada"]

    status, answer = await send(http, fake, INVOICE)
    assert status == 400
    assert answer["error"]["code"] == 132015
    assert answer["error"]["message"] == "(#132015) Template is Paused"
    # Other templates still go.
    other = Template("servicio_reactivado", "es", ("Juan", "juanperez.com.ar"))
    assert (await send(http, fake, other))[0] == 200

    async with http.post(fake.base_url + "/_fake/templates", json={"paused": []}) as response:
        assert response.status == 200
    assert (await send(http, fake, INVOICE))[0] == 200
    assert [f.code for f in fake.failed_sends] == [132015]


async def test_templates_can_be_defined_and_paused_from_python_and_over_http(
    http: aiohttp.ClientSession,
) -> None:
    hello = Template("hello", "es", ("Juan",))
    async with FakeCloudAPI(
        phone_id=PHONE_ID, token=TOKEN, templates={"hello": (1, 0)}, paused_templates={"hello"}
    ) as fake:
        assert (await send(http, fake, hello))[1]["error"]["code"] == 132015
        fake.paused_templates.clear()
        assert (await send(http, fake, hello))[0] == 200
        # Only the templates given exist.
        assert (await send(http, fake, INVOICE))[1]["error"]["code"] == 132001

        url = fake.base_url + "/_fake/templates"
        async with http.post(url, json={"templates": {"aviso": [0, 1]}}) as response:
            assert response.status == 200
        assert fake.templates == {"hello": (1, 0), "aviso": (0, 1)}
        assert (await send(http, fake, Template("aviso", "es", (), ("9",))))[0] == 200
        async with http.post(url, json={"paused": ["no_such"]}) as response:
            assert response.status == 400
            assert "no_such" in (await response.json())["error"]
        async with http.get(url) as response:
            assert await response.json() == {
                "templates": {"aviso": [0, 1], "hello": [1, 0]},
                "paused": [],
            }
