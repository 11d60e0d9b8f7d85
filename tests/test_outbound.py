"""WhatsApp's message limits (SPEC §5, Cloud API messages reference) and the outbox JSON
form of each message kind (flows/outbound.py), and the Cloud API JSON of a template with
its URL button (bot/wa_client.py).

Every limit is tested at its boundary: exactly at the limit is accepted, one character (or
one item) more is reported.
"""

from __future__ import annotations

import json

import pytest

from bot.wa_client import _graph_message
from flows.outbound import (
    Button,
    Buttons,
    ListMessage,
    Message,
    MessageLimitError,
    Row,
    Section,
    Template,
    Text,
    check_limits,
    from_json,
    limit_violations,
    to_json,
)

# The documented limits, written out here rather than imported: the test checks the
# module against the platform, not against itself.
TEXT = 4096
INTERACTIVE_BODY = 1024
BUTTONS = 3
BUTTON_TITLE = 20
LIST_ROWS = 10
ROW_TITLE = 24
ROW_DESCRIPTION = 72
LIST_BUTTON = 20
HEADER = 60
FOOTER = 60


def buttons(*titles: str, body: str = "¿Le ayudo con algo más?", **kw: str) -> Buttons:
    return Buttons(body=body, buttons=tuple(Button(f"b{i}", t) for i, t in enumerate(titles)), **kw)


def list_message(
    *rows: Row,
    button: str = "Ver opciones",
    body: str = "Elija una opción.",
    header: str | None = None,
    footer: str | None = None,
) -> ListMessage:
    return ListMessage(
        body=body,
        button=button,
        sections=(Section("Opciones", rows),),
        header=header,
        footer=footer,
    )


def rows(n: int) -> tuple[Row, ...]:
    return tuple(Row(f"r{i}", f"{i}. Opción") for i in range(1, n + 1))


def ok(message: Message | Template) -> None:
    assert limit_violations(message) == []
    check_limits(message)


def broken(message: Message | Template) -> list[str]:
    problems = limit_violations(message)
    assert problems, "the limit was not enforced"
    with pytest.raises(MessageLimitError):
        check_limits(message)
    return problems


# -- text ------------------------------------------------------------------------------


def test_text_of_exactly_4096_characters_passes() -> None:
    ok(Text("a" * TEXT))


def test_text_of_4097_characters_fails() -> None:
    broken(Text("a" * (TEXT + 1)))


def test_text_limit_counts_characters_not_bytes() -> None:
    # "ñ" is two bytes in UTF-8; WhatsApp's limit is in characters.
    ok(Text("ñ" * TEXT))


def test_empty_text_fails() -> None:
    broken(Text(""))
    broken(Text("  \n "))


# -- reply buttons ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, BUTTONS])
def test_one_to_three_buttons_pass(count: int) -> None:
    ok(buttons(*(f"Opción {i}" for i in range(count))))


@pytest.mark.parametrize("count", [0, BUTTONS + 1])
def test_no_buttons_or_four_buttons_fail(count: int) -> None:
    broken(buttons(*(f"Opción {i}" for i in range(count))))


def test_button_title_of_20_characters_passes() -> None:
    title = "Preguntas frecuentes"
    assert len(title) == BUTTON_TITLE
    ok(buttons(title))


def test_button_title_of_21_characters_fails() -> None:
    problems = broken(buttons("x" * (BUTTON_TITLE + 1)))
    assert any("title" in p for p in problems)


def test_interactive_body_of_1024_passes_and_1025_fails() -> None:
    ok(buttons("Sí", body="a" * INTERACTIVE_BODY))
    broken(buttons("Sí", body="a" * (INTERACTIVE_BODY + 1)))


@pytest.mark.parametrize("part", ["header", "footer"])
def test_button_header_and_footer_at_60_pass_and_61_fail(part: str) -> None:
    limit = HEADER if part == "header" else FOOTER
    ok(buttons("Sí", **{part: "h" * limit}))
    broken(buttons("Sí", **{part: "h" * (limit + 1)}))


def test_repeated_button_ids_fail() -> None:
    broken(Buttons("¿Seguro?", (Button("yes", "Sí"), Button("yes", "Claro"))))


# -- list messages ---------------------------------------------------------------------


def test_ten_rows_pass_and_eleven_fail() -> None:
    ok(list_message(*rows(LIST_ROWS)))
    broken(list_message(*rows(LIST_ROWS + 1)))


def test_the_ten_rows_are_counted_over_all_sections() -> None:
    six, five = rows(6), tuple(Row(f"s{i}", f"Otra {i}") for i in range(5))
    message = ListMessage(
        body="Elija.", button="Ver", sections=(Section("Uno", six), Section("Dos", five))
    )
    broken(message)
    ok(
        ListMessage(
            body="Elija.", button="Ver", sections=(Section("Uno", six), Section("Dos", five[:4]))
        )
    )


def test_a_list_without_rows_fails() -> None:
    broken(list_message())


def test_row_title_of_24_passes_and_25_fails() -> None:
    ok(list_message(Row("r", "t" * ROW_TITLE)))
    broken(list_message(Row("r", "t" * (ROW_TITLE + 1))))


def test_row_description_of_72_passes_and_73_fails() -> None:
    ok(list_message(Row("r", "Backups", "d" * ROW_DESCRIPTION)))
    broken(list_message(Row("r", "Backups", "d" * (ROW_DESCRIPTION + 1))))


def test_list_button_of_20_passes_and_21_fails() -> None:
    ok(list_message(*rows(2), button="b" * LIST_BUTTON))
    broken(list_message(*rows(2), button="b" * (LIST_BUTTON + 1)))


@pytest.mark.parametrize("part", ["header", "footer"])
def test_list_header_and_footer_at_60_pass_and_61_fail(part: str) -> None:
    limit = HEADER if part == "header" else FOOTER
    ok(list_message(*rows(2), **{part: "h" * limit}))
    broken(list_message(*rows(2), **{part: "h" * (limit + 1)}))


def test_repeated_row_ids_fail() -> None:
    broken(list_message(Row("faq", "1. Uno"), Row("faq", "2. Dos")))


# -- templates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param", ["Juan Perez", "Factura 1234 por $ 100,00", "dos    espacios", "a" * 500]
)
def test_template_parameters_without_newline_tab_or_five_spaces_pass(param: str) -> None:
    ok(Template("invoice_created", body_params=(param,)))


def test_four_spaces_in_a_row_pass_and_five_fail() -> None:
    ok(Template("invoice_created", body_params=("a" + " " * 4 + "b",)))
    broken(Template("invoice_created", body_params=("a" + " " * 5 + "b",)))


@pytest.mark.parametrize("param", ["línea 1\nlínea 2", "col\tcol", "fin\n"])
def test_template_parameter_with_newline_or_tab_fails(param: str) -> None:
    problems = broken(Template("invoice_created", body_params=("Juan", param)))
    assert any("parameter 2" in p for p in problems)


def test_template_without_name_fails() -> None:
    broken(Template(""))


# -- the outbox form -------------------------------------------------------------------

ROUND_TRIP: list[Message | Template] = [
    Text("Hola, ¿en qué podemos ayudarle?"),
    Text("Pague aquí: https://panel.example/f/1", preview_url=True),
    Buttons("¿Le ayudo con algo más?", (Button("faq", "Otra pregunta"), Button("menu", "Menú"))),
    Buttons("Elija", (Button("a", "A"),), header="Encabezado", footer="Pie"),
    ListMessage(
        body="Estas son las preguntas más frecuentes.",
        button="Ver preguntas",
        sections=(
            Section(
                "Opciones",
                (
                    Row("faq:downgrade", "1. Bajar de plan", "Por qué no es posible"),
                    Row("x", "2. Y"),
                ),
            ),
            Section("Más", (Row("menu", "3. Menú principal"),)),
        ),
        header="Preguntas",
        footer="Escriba menu para volver",
    ),
    Template("invoice_created", "es", ("Juan", "100,00 $", "https://panel.example/f/1")),
    Template("client_created"),
]


@pytest.mark.parametrize("message", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_to_json_and_back_gives_the_same_message(message: Message | Template) -> None:
    stored = json.loads(json.dumps(to_json(message)))  # as kept in a JSONB column
    assert from_json(stored) == message


def test_from_json_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError):
        from_json({"kind": "carousel", "body": "x"})


def test_from_json_rejects_a_row_without_its_fields() -> None:
    with pytest.raises(KeyError):
        from_json({"kind": "buttons", "body": "x"})


# --- the Cloud API JSON of a template (bot/wa_client.py) ------------------------------


def test_a_template_with_a_url_button_goes_as_body_and_button_components() -> None:
    typ, template = _graph_message(
        Template("factura_generada", "es", ("Juan", "1234", "$ 100,00", "15/1/2027"), ("1234",))
    )

    assert typ == "template"
    assert template["name"] == "factura_generada"
    assert template["language"] == {"code": "es"}
    body, button = template["components"]
    assert body["type"].lower() == "body"  # Meta takes the component type in any case
    assert body["parameters"] == [
        {"type": "text", "text": v} for v in ("Juan", "1234", "$ 100,00", "15/1/2027")
    ]
    # The URL button's dynamic suffix: index 0, one text parameter.
    assert button == {
        "type": "button",
        "sub_type": "url",
        "index": "0",
        "parameters": [{"type": "text", "text": "1234"}],
    }
    assert json.loads(json.dumps(template)) == template  # plain JSON, nothing of pywa's


def test_a_template_without_a_button_has_no_button_component() -> None:
    _, with_body = _graph_message(Template("servicio_reactivado", "es", ("Juan", "a.com")))
    _, bare = _graph_message(Template("hello"))

    assert [c["type"].lower() for c in with_body["components"]] == ["body"]
    assert bare == {"name": "hello", "language": {"code": "es"}}
