"""The options a state offers, and how they are laid out within WhatsApp's limits.

An option is either fixed wording from the catalog (`Choice(...)`, keys into
`messages_es`) or data (`Choice.of(...)`: a customer's service, a package with its
price, a period), whose title is taken as it is. Either way the customer can tap it,
type its number or type its words with typos (flows.matching).

Up to three options are reply buttons; more are a list message, numbered. A list holds
at most 10 rows, so longer ones are paged: the first page shows 9 options and "Ver más",
middle pages "Anteriores", 8 options and "Ver más", the last "Anteriores" and the rest.
Numbers run on across pages, so "12" typed on the second page is the twelfth option.

Titles from data are shortened to WhatsApp's limits keeping what tells them apart (two
services "Hosting Plus – juanperez.com.ar" and "Hosting Plus – juanperez.net" stay
distinguishable), with the whole title moved to the row's description. Catalog titles
are never shortened: one that is too long is a mistake the flow's tests must catch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flows.billing import Service
from flows.outbound import BUTTON_TITLE_MAX, LIST_ROWS_MAX, ROW_DESCRIPTION_MAX

ELLIPSIS = "…"
# Paging rows' ids: never a flow's own option id.
PAGE_NEXT = "page:next"
PAGE_PREVIOUS = "page:previous"


@dataclass(frozen=True, slots=True)
class Choice:
    """An option of a state: tapped by id, typed by number or by keywords.

    For catalog options `title`/`description` are catalog keys and `keywords` is the
    catalog key of its words. For data options (`literal`) they are the text itself and
    `words` are extra phrases that mean it. Hidden choices are understood when typed but
    not shown (e.g. "bajar de plan" on the main menu goes straight to that answer).
    """

    id: str
    trigger: str
    title: str
    keywords: str = ""
    description: str | None = None
    hidden: bool = False
    # Written into the flow's context before the trigger fires (e.g. which service).
    sets: tuple[tuple[str, Any], ...] = ()
    literal: bool = False
    words: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        id: str,
        trigger: str,
        title: str,
        *,
        description: str = "",
        words: Sequence[str] = (),
        sets: Sequence[tuple[str, Any]] = (),
        hidden: bool = False,
    ) -> Choice:
        """An option from data: its title and description shown as they are."""
        return cls(
            id=id,
            trigger=trigger,
            title=title,
            description=description or None,
            hidden=hidden,
            sets=tuple(sets),
            literal=True,
            words=tuple(words),
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a long list: which options (by position) and whether there is more."""

    number: int
    start: int  # index of the first option shown
    stop: int  # index after the last one shown
    has_previous: bool
    has_next: bool


def pages(count: int, rows: int = LIST_ROWS_MAX) -> list[Page]:
    """How `count` options split into pages of at most `rows` rows, paging rows included."""
    if count <= rows:
        return [Page(0, 0, count, False, False)]
    found: list[Page] = []
    start = 0
    while start < count:
        previous = start > 0
        room = rows - (1 if previous else 0)
        # The rest fits without a "more" row: this is the last page.
        stop = count if count - start <= room else start + room - 1
        found.append(Page(len(found), start, stop, previous, stop < count))
        start = stop
    return found


def shorten_titles(titles: Sequence[str], limit: int) -> list[str]:
    """Each title within `limit` characters, still telling it apart from the others.

    A title that fits is kept. One that does not keeps the words where it differs from
    the most similar other title (a service's domain, a package's size), preceded by as
    many of its first words as fit, an ellipsis marking what was cut.
    """
    return [
        _shorten(t, limit, [o for j, o in enumerate(titles) if j != i])
        for i, t in enumerate(titles)
    ]


def _shorten(title: str, limit: int, others: Sequence[str]) -> str:
    if len(title) <= limit:
        return title
    start, end = _difference(title, others)
    core = title[start:end]
    if len(core) >= limit:
        return core[: limit - 1].rstrip() + ELLIPSIS
    before, after = title[:start].strip(), title[end:].strip()
    # First the words before the difference (what the thing is), then those after it.
    head_room = limit - len(core) - (1 if after else 0)
    head = _leading_words(before, head_room - 1)
    if not before or head_room < 1:
        prefix = ""
    elif head == before:
        prefix = before + " "
    else:
        prefix = (head + ELLIPSIS) if head else ELLIPSIS
    suffix = ""
    if after:
        room = limit - len(prefix) - len(core)
        if len(after) + 1 <= room:
            suffix = " " + after
        else:
            trailing = _leading_words(after, room - 2)
            suffix = f" {trailing}{ELLIPSIS}" if trailing else ELLIPSIS
    return prefix + core + suffix


def _difference(title: str, others: Sequence[str]) -> tuple[int, int]:
    """The span of whole words of `title` where it differs from the other titles: after
    the longest beginning it shares with one of them, before the longest ending."""
    if not others:
        return 0, len(title)
    shared_start = max(_common_prefix(title, o) for o in others)
    shared_end = max(_common_suffix(title, o) for o in others)
    first = min(shared_start, len(title) - 1)
    last = max(first, len(title) - shared_end - 1)
    start = title.rfind(" ", 0, first + 1) + 1 if title[first] != " " else first + 1
    space = title.find(" ", last)
    end = len(title) if space < 0 else space
    return start, max(end, start + 1)


def _leading_words(text: str, room: int) -> str:
    """As many whole words from the start of `text` as fit in `room` characters."""
    kept = ""
    for word in text.split():
        candidate = f"{kept} {word}" if kept else word
        if len(candidate) > room:
            break
        kept = candidate
    return kept


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _common_suffix(a: str, b: str) -> int:
    return _common_prefix(a[::-1], b[::-1])


def fit_description(text: str) -> str:
    """A row description within WhatsApp's limit (72 characters)."""
    if len(text) <= ROW_DESCRIPTION_MAX:
        return text
    return text[: ROW_DESCRIPTION_MAX - 1].rstrip() + ELLIPSIS


__all__ = [
    "BUTTON_TITLE_MAX",
    "ELLIPSIS",
    "PAGE_NEXT",
    "PAGE_PREVIOUS",
    "Choice",
    "Page",
    "fit_description",
    "pages",
    "shorten_titles",
]


def service_choice(service: Service, trigger: str, *, clears: Sequence[str] = ()) -> Choice:
    """One of the customer's services as an option (its label, its package beneath),
    understood also by the label's name alone ("radiolaura" for "radiolaura.com.ar");
    choosing it sets `service` and empties the `clears` keys chosen for another one."""
    stem = service.label.split(".", 1)[0].strip()
    return Choice.of(
        f"svc:{service.id}",
        trigger,
        service.label,
        description=service.product_name,
        words=(stem,) if stem and stem != service.label else (),
        sets=(("service", service.id), *((key, None) for key in clears)),
    )
