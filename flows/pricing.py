"""What an upgrade costs. Money is `Decimal`, rounded to cents half-up at the end.

Two policies (SPEC §3):

- `difference` (the help page's rule, the default): the new package's price for the
  chosen period minus what the customer already paid for the current period, never
  below zero; the new plan's period starts on the day it is enabled. The page's example:
  paid 100 $ a year, upgrades mid-year to a 150 $ plan → 50 $.
- `prorata` (WHMCS's documented method): (new price − current recurring amount) × days
  left until the next due date ÷ days in the cycle; the next due date does not change,
  so the cycle does not either.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

# Months per billing cycle (WHMCS's names, as in SPEC §4).
CYCLE_MONTHS = {
    "monthly": 1,
    "quarterly": 3,
    "semiannually": 6,
    "annually": 12,
    "biennially": 24,
    "triennially": 36,
}


class Policy(Enum):
    DIFFERENCE = "difference"
    PRORATA = "prorata"


class PricingError(ValueError):
    """The inputs cannot give a price (unknown cycle, dates out of order)."""


@dataclass(frozen=True, slots=True)
class UpgradeQuote:
    amount: Decimal
    policy: Policy
    cycle: str  # the billing cycle of the new plan
    new_recurring: Decimal  # what the new plan costs per cycle from now on
    next_due: date  # the service's next due date once the upgrade applies
    days_left: int | None = None  # pro-rata only
    days_in_cycle: int | None = None  # pro-rata only


def add_months(day: date, months: int) -> date:
    """Same day `months` later, clamped to the month's end (Jan 31 + 1 month = Feb 28)."""
    month_index = day.month - 1 + months
    year = day.year + month_index // 12
    month = month_index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(day.day, last))


def cycle_months(cycle: str) -> int:
    try:
        return CYCLE_MONTHS[cycle]
    except KeyError:
        raise PricingError(f"unknown billing cycle {cycle!r}") from None


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def difference(
    *, paid_for_current_period: Decimal, new_price: Decimal, new_cycle: str, enabled_on: date
) -> UpgradeQuote:
    amount = max(ZERO, new_price - paid_for_current_period)
    return UpgradeQuote(
        amount=to_cents(amount),
        policy=Policy.DIFFERENCE,
        cycle=new_cycle,
        new_recurring=to_cents(new_price),
        next_due=add_months(enabled_on, cycle_months(new_cycle)),
    )


def prorata(
    *,
    current_recurring: Decimal,
    new_price_same_cycle: Decimal,
    cycle: str,
    next_due: date,
    today: date,
) -> UpgradeQuote:
    """WHMCS: (new − current) × days until the next due date ÷ days in the cycle."""
    cycle_start = add_months(next_due, -cycle_months(cycle))
    days_in_cycle = (next_due - cycle_start).days
    days_left = (next_due - today).days
    if days_in_cycle <= 0:
        raise PricingError("the billing cycle has no days")
    if not 0 <= days_left <= days_in_cycle:
        raise PricingError(f"today {today} is outside the current cycle ending {next_due}")
    raw = (new_price_same_cycle - current_recurring) * days_left / days_in_cycle
    return UpgradeQuote(
        amount=to_cents(max(ZERO, raw)),
        policy=Policy.PRORATA,
        cycle=cycle,
        new_recurring=to_cents(new_price_same_cycle),
        next_due=next_due,
        days_left=days_left,
        days_in_cycle=days_in_cycle,
    )


def monthly(amount: Decimal, cycle: str) -> Decimal:
    """The price of a cycle per month, to compare packages sold in different cycles."""
    return amount / cycle_months(cycle)


def is_upgrade(
    current_amount: Decimal, current_cycle: str, new_prices: Mapping[str, Decimal]
) -> bool:
    """Whether a package is priced above the current one (help page: only those are
    upgrades; equal or lower is a downgrade). Compared in the service's own cycle when
    the package is sold in it, else per month at the package's cheapest rate."""
    if not new_prices:
        return False
    if current_cycle in new_prices:
        return new_prices[current_cycle] > current_amount
    cheapest = min(monthly(price, cycle) for cycle, price in new_prices.items())
    return cheapest > monthly(current_amount, current_cycle)
