"""What the customer is told when a person of the team takes the conversation and when
they give it back (messages_es/handover.toml), and the template a staff member's message
goes out as once WhatsApp's 24 h window has closed."""

from __future__ import annotations

from datetime import datetime, time

from flows.alerts import template_from
from flows.catalog import Catalog
from flows.hours import BusinessHours
from flows.matching import fold
from flows.outbound import Reply, Template, Text

FOLLOW_UP = "handover.follow_up"
HANDED_BACK = "handover.handed_back"


def taken_over(catalog: Catalog, hours: BusinessHours, now: datetime) -> str:
    """The hand-over message: a person answers soon, or — outside business hours — the
    schedule and when they will."""
    if hours.is_open(now):
        return catalog.text("menu.handed_over")
    opens = when(catalog, hours.next_opening(now))
    return catalog.text("handover.closed", hours=schedule(catalog, hours), when=opens)


def is_return_word(catalog: Catalog, text: str) -> bool:
    """The customer's exact `menu` (case, accents and punctuation aside): the only thing
    that takes a conversation back from a person."""
    return fold(text) == fold(catalog.text("handover.return_word"))


def follow_up(catalog: Catalog, customer_name: str) -> Template:
    return template_from(catalog, FOLLOW_UP, {"name": customer_name})


def handed_back(catalog: Catalog, customer_name: str) -> Reply:
    """A person resolved the conversation: the bot has it again (as a template once the
    24 h window has closed)."""
    return Reply(
        Text(catalog.text("handover.handed_back.text")),
        template=template_from(catalog, HANDED_BACK, {"name": customer_name}),
    )


def schedule(catalog: Catalog, hours: BusinessHours) -> str:
    """`lunes a viernes de 9:00 a 18:00; sábado de 10:00 a 13:00`."""
    names = catalog.words("handover.days")
    parts = []
    for days, start, end in hours.week():
        if len(days) > 2:
            said = catalog.text("handover.day_range", first=names[days[0]], last=names[days[-1]])
        elif len(days) == 2:
            said = names[days[0]] + catalog.text("handover.day_list_last") + names[days[1]]
        else:
            said = names[days[0]]
        parts.append(
            catalog.text("handover.opening", days=said, start=_clock(start), end=_clock(end))
        )
    return catalog.text("handover.openings_join").join(parts)


def when(catalog: Catalog, at: datetime) -> str:
    """`lunes 7 de diciembre a las 9:00` (local time)."""
    return catalog.text(
        "handover.when",
        day=catalog.words("handover.days")[at.weekday()],
        date=at.day,
        month=catalog.words("handover.months")[at.month - 1],
        time=_clock(at.time()),
    )


def _clock(t: time) -> str:
    if t == time.max:
        return "24:00"
    return f"{t.hour}:{t.minute:02d}"
