"""WHMCS's values as its API sends them: ids, text, flags, counts, amounts and dates that
come as strings or numbers, `""` or `"0000-00-00"` for nothing."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from flows.billing import BillingUnavailable


def is_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and int(value) > 0


def wid(value: Any) -> str | None:
    """A WHMCS id, or None. Anything else must never reach WHMCS: it drops filters
    whose value is empty or zero (GetClientsProducts without clientid lists everyone's)."""
    text = as_text(value).strip()
    return str(int(text)) if is_id(text) else None


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def count(value: Any, *, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def money(value: Any) -> Decimal:
    try:
        amount = Decimal(as_text(value).strip() or "0")
    except InvalidOperation:
        raise BillingUnavailable(f"WHMCS sent an amount that is not one: {value!r}") from None
    if not amount.is_finite():
        raise BillingUnavailable(f"WHMCS sent an amount that is not one: {value!r}")
    return amount


def day(value: Any) -> date | None:
    """WHMCS's dates: "YYYY-MM-DD" (maybe with a time), "0000-00-00" for none."""
    text = as_text(value)[:10]
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


_AMOUNT = re.compile(r"\d[\d.,]*")
# formatCurrency puts a negative amount's sign before the prefix ("-$25.00 USD").
_NEGATIVE = re.compile(r"^\s*-")


def formatted_money(text: str) -> Decimal | None:
    """An amount WHMCS formatted for people ("$1,234.56 USD", "1.234,56 €", "-$25.00")."""
    match = _AMOUNT.search(text)
    if match is None:
        return None
    number = match.group(0).rstrip(".,")
    last = max(number.rfind("."), number.rfind(","))
    # A separator followed by exactly three digits is grouping ("1,234"), else decimals.
    if last >= 0 and len(number) - last - 1 != 3:
        whole, decimals = number[:last], number[last + 1 :]
    else:
        whole, decimals = number, ""
    digits = "".join(ch for ch in whole if ch.isdigit())
    amount = Decimal(f"{digits or '0'}.{decimals or '0'}")
    return -amount if _NEGATIVE.match(text) else amount
