"""Checking a billing import (SPEC §4) before anything is written.

Every problem is reported at once, each naming the record and the field
(`services[2] (id "s9"): billing_cycle "weekly" is not one of monthly, …`), and a file
with any problem changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flows.billing import CYCLES, INVOICE_STATUSES, SERVICE_STATUSES

SECTIONS = (
    "clients",
    "categories",
    "products",
    "services",
    "invoices",
    "domains",
    "cancellation_requests",
    "quotes",
)
CANCELLATION_TYPES = ("immediate", "end_of_period")


class ImportProblems(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(slots=True)
class KnownIds:
    """Ids already in the database, which the file may refer to."""

    clients: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    products: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)


def validate(data: Any, known: KnownIds) -> list[str]:
    if not isinstance(data, dict):
        return ["the file must hold a JSON object with the sections " + ", ".join(SECTIONS)]
    problems: list[str] = [
        f"unknown section {key!r} (expected one of {', '.join(SECTIONS)})"
        for key in data
        if key not in SECTIONS
    ]
    sections: dict[str, list[Any]] = {}
    for name in SECTIONS:
        value = data.get(name, [])
        if not isinstance(value, list):
            problems.append(f"{name} must be a list")
            value = []
        sections[name] = value

    ids = {name: _ids(name, sections[name], problems) for name in SECTIONS}
    clients = known.clients | ids["clients"]
    categories = known.categories | ids["categories"]
    products = known.products | ids["products"]
    services = known.services | ids["services"]

    for where, c in _records("clients", sections["clients"], problems):
        _text(c, "name", where, problems)
        email = _text(c, "email", where, problems)
        if email is not None and "@" not in email:
            problems.append(f"{where}: email {email!r} is not an email address")
        _optional_text(c, "phone", where, problems)
        _optional_bool(c, "verified", where, problems)
        _optional_text(c, "account_manager", where, problems)
    emails = [c.get("email") for c in sections["clients"] if isinstance(c, dict)]
    for email in {e for e in emails if isinstance(e, str) and emails.count(e) > 1}:
        problems.append(f"clients: email {email!r} is used by more than one client")

    for where, c in _records("categories", sections["categories"], problems):
        _text(c, "name", where, problems)

    for where, p in _records("products", sections["products"], problems):
        _text(p, "name", where, problems)
        _ref(p, "category", categories, where, problems)
        prices = p.get("prices", {})
        if not isinstance(prices, dict) or not prices:
            problems.append(f"{where}: prices must map billing cycles to amounts")
        else:
            for cycle, amount in prices.items():
                if cycle not in CYCLES:
                    problems.append(
                        f"{where}: prices has cycle {cycle!r}, not one of " + ", ".join(CYCLES)
                    )
                _money_value(amount, f"prices.{cycle}", where, problems)
        upgrades = p.get("upgrades_to", [])
        if not isinstance(upgrades, list):
            problems.append(f"{where}: upgrades_to must be a list of product ids")
        else:
            for target in upgrades:
                if target not in products:
                    problems.append(f"{where}: upgrades_to names unknown product {target!r}")
                elif target == p.get("id"):
                    problems.append(f"{where}: upgrades_to names the product itself")

    for where, s in _records("services", sections["services"], problems):
        _ref(s, "client", clients, where, problems)
        _ref(s, "product", products, where, problems)
        _text(s, "label", where, problems)
        _one_of(s, "status", SERVICE_STATUSES, where, problems)
        _one_of(s, "billing_cycle", CYCLES, where, problems)
        _money(s, "amount", where, problems)
        _optional_date(s, "period_start", where, problems)
        _optional_date(s, "next_due", where, problems)
        _optional_text(s, "server", where, problems)

    for where, i in _records("invoices", sections["invoices"], problems):
        _ref(i, "client", clients, where, problems)
        if i.get("service") is not None:
            _ref(i, "service", services, where, problems)
        _money(i, "total", where, problems)
        _one_of(i, "status", INVOICE_STATUSES, where, problems)
        _optional_date(i, "due", where, problems)

    for where, d in _records("domains", sections["domains"], problems):
        _ref(d, "client", clients, where, problems)
        _text(d, "name", where, problems)
        _text(d, "status", where, problems)
        _optional_bool(d, "auto_renew", where, problems)
        _optional_date(d, "next_due", where, problems)

    for where, r in _records("cancellation_requests", sections["cancellation_requests"], problems):
        _ref(r, "service", services, where, problems)
        _one_of(r, "type", CANCELLATION_TYPES, where, problems)
        _text(r, "reason", where, problems)
        _timestamp(r, "requested_at", where, problems)

    for where, q in _records("quotes", sections["quotes"], problems):
        _ref(q, "client", clients, where, problems)
        _money(q, "total", where, problems)
        _optional_text(q, "subject", where, problems)
        _optional_date(q, "valid_until", where, problems)
    return problems


# -- helpers -----------------------------------------------------------------------------


def _ids(section: str, records: list[Any], problems: list[str]) -> set[str]:
    seen: set[str] = set()
    for record in records:
        rid = record.get("id") if isinstance(record, dict) else None
        if not isinstance(rid, str) or not rid.strip():
            continue  # reported by _records
        if rid in seen:
            problems.append(f"{section}: id {rid!r} appears more than once")
        seen.add(rid)
    return seen


def _records(
    section: str, records: list[Any], problems: list[str]
) -> Iterable[tuple[str, dict[str, Any]]]:
    for n, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(f"{section}[{n}]: must be an object")
            continue
        rid = record.get("id")
        if not isinstance(rid, str) or not rid.strip():
            problems.append(f"{section}[{n}]: id must be a non-empty string")
            continue
        yield f"{section}[{n}] (id {rid!r})", record


def _text(record: dict[str, Any], name: str, where: str, problems: list[str]) -> str | None:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: {name} must be a non-empty string")
        return None
    return value


def _optional_text(record: dict[str, Any], name: str, where: str, problems: list[str]) -> None:
    value = record.get(name)
    if value is not None and not isinstance(value, str):
        problems.append(f"{where}: {name} must be a string")


def _optional_bool(record: dict[str, Any], name: str, where: str, problems: list[str]) -> None:
    value = record.get(name)
    if value is not None and not isinstance(value, bool):
        problems.append(f"{where}: {name} must be true or false")


def _one_of(
    record: dict[str, Any], name: str, allowed: tuple[str, ...], where: str, problems: list[str]
) -> None:
    value = record.get(name)
    if value not in allowed:
        problems.append(f"{where}: {name} {value!r} is not one of {', '.join(allowed)}")


def _ref(
    record: dict[str, Any], name: str, existing: set[str], where: str, problems: list[str]
) -> None:
    """`name` must be the id of a record of that kind (a client, a product…)."""
    value = record.get(name)
    if not isinstance(value, str) or value not in existing:
        problems.append(f"{where}: {name} {value!r} is not a known {name}")


def _money(record: dict[str, Any], name: str, where: str, problems: list[str]) -> None:
    _money_value(record.get(name), name, where, problems)


def _money_value(value: Any, name: str, where: str, problems: list[str]) -> None:
    # Money travels as decimal strings: a float would already have lost cents.
    if not isinstance(value, str):
        problems.append(f'{where}: {name} must be a decimal string like "10.00"')
        return
    try:
        amount = Decimal(value)
    except InvalidOperation:
        problems.append(f"{where}: {name} {value!r} is not a decimal amount")
        return
    if not amount.is_finite():
        problems.append(f"{where}: {name} {value!r} is not a decimal amount")
    elif amount < 0:
        problems.append(f"{where}: {name} {value!r} is negative")
    elif amount != amount.quantize(Decimal("0.01")):
        problems.append(f"{where}: {name} {value!r} has more than two decimals")


def _optional_date(record: dict[str, Any], name: str, where: str, problems: list[str]) -> None:
    _parsed(record, name, where, problems, parse=date.fromisoformat, expected="an ISO date")


def _timestamp(record: dict[str, Any], name: str, where: str, problems: list[str]) -> None:
    if record.get(name) is None:
        problems.append(f"{where}: {name} is required")
        return
    _parsed(
        record, name, where, problems, parse=datetime.fromisoformat, expected="an ISO 8601 time"
    )


def _parsed(
    record: dict[str, Any],
    name: str,
    where: str,
    problems: list[str],
    *,
    parse: Callable[[str], object],
    expected: str,
) -> None:
    value = record.get(name)
    if value is None:
        return
    if not isinstance(value, str):
        problems.append(f"{where}: {name} must be {expected}")
        return
    try:
        parse(value)
    except ValueError:
        problems.append(f"{where}: {name} {value!r} is not {expected}")
