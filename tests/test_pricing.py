"""Upgrade pricing, with the worked examples of the help page and of WHMCS's method."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from flows.pricing import Policy, PricingError, add_months, difference, prorata


def test_help_page_example_100_a_year_mid_year_to_150_costs_50() -> None:
    quote = difference(
        paid_for_current_period=Decimal("100.00"),
        new_price=Decimal("150.00"),
        new_cycle="annually",
        enabled_on=date(2026, 7, 1),
    )
    assert quote.amount == Decimal("50.00")
    assert quote.policy is Policy.DIFFERENCE
    # The new plan's period starts the day it is enabled.
    assert quote.next_due == date(2027, 7, 1)
    assert quote.new_recurring == Decimal("150.00")


def test_difference_is_never_negative() -> None:
    # Paid a year of the small plan, upgrading to a bigger plan billed monthly.
    quote = difference(
        paid_for_current_period=Decimal("100.00"),
        new_price=Decimal("15.00"),
        new_cycle="monthly",
        enabled_on=date(2026, 3, 31),
    )
    assert quote.amount == Decimal("0.00")
    assert quote.next_due == date(2026, 4, 30)


def test_whmcs_prorata_monthly_example() -> None:
    # 10 → 25 a month with 15 of 30 days left = 7.50
    quote = prorata(
        current_recurring=Decimal("10.00"),
        new_price_same_cycle=Decimal("25.00"),
        cycle="monthly",
        next_due=date(2026, 7, 1),  # June has 30 days
        today=date(2026, 6, 16),
    )
    assert (quote.days_left, quote.days_in_cycle) == (15, 30)
    assert quote.amount == Decimal("7.50")
    assert quote.next_due == date(2026, 7, 1)  # unchanged


def test_whmcs_prorata_yearly_example() -> None:
    # 120 → 180 a year with 184 of 365 days left = 30.25 (30.2465… rounded half up)
    next_due = date(2027, 1, 1)
    quote = prorata(
        current_recurring=Decimal("120.00"),
        new_price_same_cycle=Decimal("180.00"),
        cycle="annually",
        next_due=next_due,
        today=date(2026, 7, 1),
    )
    assert (quote.days_left, quote.days_in_cycle) == (184, 365)
    assert quote.amount == Decimal("30.25")


def test_prorata_rejects_dates_outside_the_cycle() -> None:
    with pytest.raises(PricingError):
        prorata(
            current_recurring=Decimal("10"),
            new_price_same_cycle=Decimal("20"),
            cycle="monthly",
            next_due=date(2026, 7, 1),
            today=date(2026, 7, 2),
        )
    with pytest.raises(PricingError):
        difference(
            paid_for_current_period=Decimal("1"),
            new_price=Decimal("2"),
            new_cycle="weekly",
            enabled_on=date(2026, 1, 1),
        )


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2026, 11, 15), 3, date(2027, 2, 15)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),
        (date(2026, 6, 30), 36, date(2029, 6, 30)),
    ],
)
def test_add_months(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected
