"""What the bot sends: plain text, reply buttons, list messages and templates.

Each kind knows WhatsApp's limits (SPEC §5) and turns itself into the JSON kept in the
outbox. The limits are checked before anything leaves, because the Cloud API rejects a
whole message for one over-long title and pywa does not check them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Cloud API limits (developers.facebook.com/docs/whatsapp/cloud-api/reference/messages).
TEXT_MAX = 4096
INTERACTIVE_BODY_MAX = 1024
HEADER_MAX = 60
FOOTER_MAX = 60
BUTTONS_MAX = 3
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256
LIST_ROWS_MAX = 10
LIST_SECTIONS_MAX = 10
ROW_TITLE_MAX = 24
ROW_DESCRIPTION_MAX = 72
ROW_ID_MAX = 200
LIST_BUTTON_MAX = 20
SECTION_TITLE_MAX = 24
# Template parameters may not hold newlines, tabs or more than 4 spaces in a row.
_BAD_TEMPLATE_PARAM = re.compile(r"[\n\t]| {5,}")


class MessageLimitError(ValueError):
    """A message breaks one of WhatsApp's limits; it must not be sent."""


@dataclass(frozen=True, slots=True)
class Button:
    id: str
    title: str


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    title: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class Text:
    body: str
    preview_url: bool = False


@dataclass(frozen=True, slots=True)
class Buttons:
    body: str
    buttons: tuple[Button, ...]
    header: str | None = None
    footer: str | None = None


@dataclass(frozen=True, slots=True)
class ListMessage:
    body: str
    button: str
    sections: tuple[Section, ...]
    header: str | None = None
    footer: str | None = None


@dataclass(frozen=True, slots=True)
class Template:
    """An approved template: the only thing WhatsApp delivers outside the 24 h window."""

    name: str
    language: str = "es"
    body_params: tuple[str, ...] = ()
    # The dynamic part of the template's URL button (index 0), e.g. an invoice number
    # appended to `…/viewinvoice.php?id=`; empty for a template without one.
    button_params: tuple[str, ...] = ()


Message = Text | Buttons | ListMessage


@dataclass(frozen=True, slots=True)
class Reply:
    """One outgoing message, and the template to use instead if the window is closed."""

    message: Message
    template: Template | None = field(default=None)


def limit_violations(message: Message | Template) -> list[str]:
    """Every WhatsApp limit the message breaks, in words; empty when it may be sent."""
    problems: list[str] = []

    def at_most(what: str, value: str | None, limit: int) -> None:
        if value is not None and len(value) > limit:
            problems.append(f"{what} has {len(value)} characters (at most {limit})")

    def not_blank(what: str, value: str) -> None:
        if not value.strip():
            problems.append(f"{what} is empty")

    match message:
        case Text(body=body):
            not_blank("text", body)
            at_most("text", body, TEXT_MAX)
        case Buttons(body=body, buttons=buttons, header=header, footer=footer):
            not_blank("body", body)
            at_most("body", body, INTERACTIVE_BODY_MAX)
            at_most("header", header, HEADER_MAX)
            at_most("footer", footer, FOOTER_MAX)
            if not 1 <= len(buttons) <= BUTTONS_MAX:
                problems.append(f"{len(buttons)} buttons (1 to {BUTTONS_MAX})")
            for b in buttons:
                not_blank(f"button {b.id!r} title", b.title)
                at_most(f"button {b.id!r} title", b.title, BUTTON_TITLE_MAX)
                at_most(f"button {b.id!r} id", b.id, BUTTON_ID_MAX)
            _unique("button", [b.id for b in buttons], problems)
            _unique("button title", [b.title for b in buttons], problems)
        case ListMessage(body=body, button=button, sections=sections, header=header, footer=footer):
            not_blank("body", body)
            at_most("body", body, INTERACTIVE_BODY_MAX)
            at_most("header", header, HEADER_MAX)
            at_most("footer", footer, FOOTER_MAX)
            not_blank("list button", button)
            at_most("list button", button, LIST_BUTTON_MAX)
            rows = [r for s in sections for r in s.rows]
            if not 1 <= len(sections) <= LIST_SECTIONS_MAX:
                problems.append(f"{len(sections)} sections (1 to {LIST_SECTIONS_MAX})")
            if not 1 <= len(rows) <= LIST_ROWS_MAX:
                problems.append(f"{len(rows)} rows in all (1 to {LIST_ROWS_MAX})")
            for s in sections:
                # Meta needs titles when there are several sections; pywa always sends one.
                not_blank("section title", s.title)
                at_most(f"section {s.title!r} title", s.title, SECTION_TITLE_MAX)
            for r in rows:
                not_blank(f"row {r.id!r} title", r.title)
                at_most(f"row {r.id!r} title", r.title, ROW_TITLE_MAX)
                at_most(f"row {r.id!r} description", r.description, ROW_DESCRIPTION_MAX)
                at_most(f"row {r.id!r} id", r.id, ROW_ID_MAX)
            _unique("row", [r.id for r in rows], problems)
        case Template(name=name, body_params=params, button_params=button_params):
            not_blank("template name", name)
            for i, p in enumerate(params, 1):
                if _BAD_TEMPLATE_PARAM.search(p):
                    problems.append(
                        f"template parameter {i} has a newline, a tab or more than 4 spaces"
                    )
                not_blank(f"template parameter {i}", p)
            for i, p in enumerate(button_params, 1):
                not_blank(f"template button parameter {i}", p)
                if any(c.isspace() for c in p):
                    problems.append(f"template button parameter {i} has a space")
    return problems


def check_limits(message: Message | Template) -> None:
    problems = limit_violations(message)
    if problems:
        raise MessageLimitError("; ".join(problems))


def _unique(what: str, values: list[str], problems: list[str]) -> None:
    if len(set(values)) != len(values):
        problems.append(f"{what} ids repeat")


def to_json(message: Message | Template) -> dict[str, Any]:
    """The outbox form of a message."""
    match message:
        case Text(body=body, preview_url=preview):
            return {"kind": "text", "body": body, "preview_url": preview}
        case Buttons(body=body, buttons=buttons, header=header, footer=footer):
            return {
                "kind": "buttons",
                "body": body,
                "buttons": [{"id": b.id, "title": b.title} for b in buttons],
                "header": header,
                "footer": footer,
            }
        case ListMessage(body=body, button=button, sections=sections, header=header, footer=footer):
            return {
                "kind": "list",
                "body": body,
                "button": button,
                "sections": [
                    {
                        "title": s.title,
                        "rows": [
                            {"id": r.id, "title": r.title, "description": r.description}
                            for r in s.rows
                        ],
                    }
                    for s in sections
                ],
                "header": header,
                "footer": footer,
            }
        case Template(name=name, language=language, body_params=params, button_params=buttons):
            data: dict[str, Any] = {
                "kind": "template",
                "name": name,
                "language": language,
                "params": list(params),
            }
            if buttons:
                data["button_params"] = list(buttons)
            return data


def from_json(data: dict[str, Any]) -> Message | Template:
    """Inverse of `to_json`; raises KeyError/ValueError on a malformed row."""
    kind = data["kind"]
    if kind == "text":
        return Text(body=data["body"], preview_url=bool(data.get("preview_url", False)))
    if kind == "buttons":
        return Buttons(
            body=data["body"],
            buttons=tuple(Button(b["id"], b["title"]) for b in data["buttons"]),
            header=data.get("header"),
            footer=data.get("footer"),
        )
    if kind == "list":
        return ListMessage(
            body=data["body"],
            button=data["button"],
            sections=tuple(
                Section(
                    s.get("title", ""),
                    tuple(Row(r["id"], r["title"], r.get("description", "")) for r in s["rows"]),
                )
                for s in data["sections"]
            ),
            header=data.get("header"),
            footer=data.get("footer"),
        )
    if kind == "template":
        return Template(
            name=data["name"],
            language=data.get("language", "es"),
            body_params=tuple(data.get("params", ())),
            button_params=tuple(data.get("button_params", ())),
        )
    raise ValueError(f"unknown message kind {kind!r}")


def preview(message: Message | Template) -> str:
    """A one-line text form, for logs and the staff console."""
    match message:
        case Text(body=body) | Buttons(body=body) | ListMessage(body=body):
            return body
        case Template(name=name, body_params=params):
            return f"[{name}] " + " | ".join(params)
