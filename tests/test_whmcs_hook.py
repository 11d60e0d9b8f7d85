"""integrations/whmcs/upgrade_difference.php, the help page's upgrade rule inside WHMCS,
run by PHP exactly as WHMCS would load it: a small driver stubs what the file calls
(add_hook, App::getFromRequest, Capsule, WHMCS\\Carbon::today, logActivity), loads it
unmodified and runs its hooks with the variables WHMCS 8.7 passes: OrderProductUpgradeOverride
(the price) and AfterProductUpgrade (the period).

Expected amounts come from the help page: "si usted pagó 100 $ anuales y a mitad de año
desea subir de plan a uno de 150 $, se le facturará 150 $ − 100 $ que ya abonó = 50 $" —
the new package's price for the chosen period minus what was paid for the current one,
never below zero. Expected dates come from its other half: the new plan's period starts
on the day it is enabled (next due = that day + the new cycle, the month's last day when
the month is shorter). Then the fake WHMCS and the bot are held to the same hook."""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.config import Settings
from bot.fakes.whmcs import FakeWhmcs
from bot.whmcs import WhmcsBilling
from bot.whmcs.api import WhmcsApi
from bot.whmcs.values import formatted_money
from flows.pricing import CYCLE_MONTHS, add_months, difference
from store import whmcs_index

HOOK = Path(__file__).resolve().parent.parent / "integrations" / "whmcs" / "upgrade_difference.php"
PHP = shutil.which("php")
needs_php = pytest.mark.skipif(
    PHP is None, reason="php is not installed (scripts/ensure-php installs it when run as root)"
)

# WHMCS's side, stubbed: only what the hook file calls. Any PHP notice or warning is an
# error, so an undefined array key or a typo fails the test.
DRIVER = r"""<?php
namespace WHMCS {
    /** WHMCS\Carbon (Carbon's today), as far as the hook uses it: the case's day. */
    final class Carbon
    {
        public static $today = null;
        private $day;

        private function __construct(string $day)
        {
            $this->day = $day;
        }

        public static function today(): self
        {
            if (self::$today === null) {
                throw new \RuntimeException('the case sets no today');
            }
            return new self(self::$today);
        }

        public function toDateString(): string
        {
            return $this->day;
        }
    }
}

namespace WHMCS\Database {
    final class Capsule
    {
        public static $tables = [];
        /** Every update(): table, ids of the rows it matched, the values it set. */
        public static $updates = [];

        public static function table(string $name): Query
        {
            if (!isset(self::$tables[$name])) {
                throw new \RuntimeException("no table $name");
            }
            $rows = self::$tables[$name];
            return new Query($name, array_keys($rows), array_keys($rows[0]));
        }
    }

    /** Illuminate's builder, as far as the hook uses it: where(column, value), first, value,
     * update. It reads and writes Capsule::$tables. */
    final class Query
    {
        private $table;
        private $keys;
        private $columns;

        public function __construct(string $table, array $keys, array $columns)
        {
            $this->table = $table;
            $this->keys = $keys;
            $this->columns = $columns;
        }

        public function where(string $column, $value): self
        {
            $this->known($column);
            $keys = array_filter($this->keys, function (int $key) use ($column, $value): bool {
                return $value !== null && (string) $this->row($key)[$column] === (string) $value;
            });
            return new self($this->table, array_values($keys), $this->columns);
        }

        public function first(): ?object
        {
            return $this->keys ? (object) $this->row($this->keys[0]) : null;
        }

        public function value(string $column)
        {
            $this->known($column);
            return $this->keys ? $this->row($this->keys[0])[$column] : null;
        }

        /** Sets the columns of every row matched so far; how many, as Illuminate answers. */
        public function update(array $values): int
        {
            array_map([$this, 'known'], array_keys($values));
            $ids = [];
            foreach ($this->keys as $key) {
                Capsule::$tables[$this->table][$key] = array_replace($this->row($key), $values);
                $ids[] = $this->row($key)['id'];
            }
            Capsule::$updates[] = ['table' => $this->table, 'ids' => $ids, 'values' => $values];
            return count($ids);
        }

        private function row(int $key): array
        {
            return Capsule::$tables[$this->table][$key];
        }

        private function known(string $column): void
        {
            if (!in_array($column, $this->columns, true)) {
                throw new \RuntimeException("unknown column $column");
            }
        }
    }
}

namespace {
    use WHMCS\Database\Capsule;

    set_error_handler(function (int $level, string $message, string $file, int $line): bool {
        throw new ErrorException($message, 0, $level, $file, $line);
    });
    define('WHMCS', true);
    $hooks = [];
    $activity = [];

    function add_hook(string $name, int $priority, callable $function): void
    {
        $GLOBALS['hooks'][$name][] = $function;
    }

    function logActivity(string $description, int $userId = 0): void
    {
        $GLOBALS['activity'][] = $description;
    }

    final class App
    {
        public static $request = [];

        public static function getFromRequest(string $key, string $key2 = '')
        {
            return self::$request[$key] ?? '';
        }
    }

    $cases = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
    require $argv[1];
    $results = [];
    foreach ($cases as $case) {
        App::$request = $case['request'];
        Capsule::$tables = $case['tables'];
        Capsule::$updates = [];
        WHMCS\Carbon::$today = $case['today'];
        $activity = [];
        $returns = [];
        foreach ($hooks[$case['hook']] ?? [] as $function) {
            $returned = $function($case['vars']);
            if ($case['hook'] !== 'OrderProductUpgradeOverride') {
                continue;  // doUpgrade ignores what AfterProductUpgrade returns
            }
            if (!is_array($returned)) {  // WHMCS ignores anything else
                throw new UnexpectedValueException('the hook returned ' . gettype($returned));
            }
            $returns[] = (object) $returned;  // [] as {} in JSON
        }
        $results[] = [
            'returns' => $returns,
            'activity' => $activity,
            'updates' => Capsule::$updates,
            'tables' => Capsule::$tables,
        ];
    }
    echo json_encode(
        ['hooks' => array_keys($hooks), 'results' => $results],
        JSON_THROW_ON_ERROR | JSON_PRESERVE_ZERO_FRACTION
    );
}
"""

CYCLES = ("monthly", "quarterly", "semiannually", "annually", "biennially", "triennially")
WHMCS_CYCLE = {
    "monthly": "Monthly",
    "quarterly": "Quarterly",
    "semiannually": "Semi-Annually",
    "annually": "Annually",
    "biennially": "Biennially",
    "triennially": "Triennially",
}
USD, ARS = 1, 2


def pricing(relid: int, currency: int, **prices: str) -> dict[str, Any]:
    """A tblpricing row: -1.00 where the cycle is not sold, as WHMCS stores it."""
    row: dict[str, Any] = {"id": relid * 10 + currency, "type": "product"}
    row |= {"currency": currency, "relid": relid}
    for cycle in CYCLES:
        row[f"{cycle[0]}setupfee"] = "0.00"
        row[cycle] = prices.get(cycle, "-1.00")
    return row


def hosting(
    sid: int,
    client: int,
    pid: int,
    cycle: str,
    amount: str,
    *,
    first_payment: str = "",
    next_due: str = "2027-01-01",
) -> dict[str, Any]:
    """A tblhosting row: `amount` is the recurring amount, what each period costs."""
    return {
        "id": sid,
        "userid": client,
        "packageid": pid,
        "billingcycle": cycle,
        "amount": amount,
        "firstpaymentamount": first_payment or amount,
        "nextduedate": next_due,
        "nextinvoicedate": next_due,
        "domainstatus": "Active",
    }


TABLES: dict[str, list[dict[str, Any]]] = {
    "tblclients": [{"id": 1, "currency": USD}, {"id": 2, "currency": ARS}],
    "tblpricing": [
        pricing(1, USD, monthly="10.00", annually="100.00"),  # Hosting Inicial
        pricing(1, ARS, monthly="10000.00", annually="100000.00"),
        pricing(2, USD, monthly="25.00", semiannually="80.00", annually="150.00"),  # Pro
        pricing(2, ARS, monthly="25000.00", annually="150000.00"),
        pricing(3, USD, monthly="8.00", annually="80.00"),  # Hosting Mini
        pricing(4, USD, annually="300.00"),  # Radio Pro: yearly only
    ],
    "tblhosting": [
        # The help page's customer, whose first year was on a promotion: what they pay
        # for each year now, the current one included, is 100.
        hosting(10, 1, 1, "Annually", "100.00", first_payment="60.00"),
        hosting(11, 1, 1, "Monthly", "10.00"),
        hosting(12, 2, 1, "Annually", "100000.00"),  # billed in pesos
        hosting(13, 1, 1, "One Time", "100.00"),
        hosting(14, 1, 1, "Annually", "99.99"),
    ],
}


def upgrade_vars(
    new_pid: int,
    cycle: str,
    *,
    old_pid: int = 1,
    whmcs_price: str = "25.21",
    days: int = 184,
    total_days: int = 365,
    discount: float = 0,
) -> dict[str, Any]:
    """What WHMCS 8.7's SumUpPackageUpgradeOrder passes to the hook; `price` is its own
    pro-rata (25.21: 100 → 150 a year with 184 of 365 days left)."""
    return {
        "oldproductid": old_pid,
        "oldproductname": f"Product {old_pid}",
        "newproductid": new_pid,
        "newproductname": f"Product {new_pid}",
        "daysuntilrenewal": days,
        "totaldays": total_days,
        "newproductbillingcycle": cycle,
        "price": whmcs_price,
        "discount": discount,
        "promoqualifies": discount > 0,
    }


def case(
    request: dict[str, Any], vars_: dict[str, Any], tables: dict[str, Any] = TABLES
) -> dict[str, Any]:
    """An upgrade's price: OrderProductUpgradeOverride on `vars_`."""
    hook = "OrderProductUpgradeOverride"
    return {"hook": hook, "request": request, "vars": vars_, "tables": tables, "today": None}


def applied(upgrade_id: int, today: date, tables: dict[str, Any]) -> dict[str, Any]:
    """An upgrade WHMCS has just applied on `today`: doUpgrade's AfterProductUpgrade."""
    vars_ = {"upgradeid": upgrade_id}
    hook = "AfterProductUpgrade"
    return {"hook": hook, "request": {}, "vars": vars_, "tables": tables, "today": str(today)}


def run_hook(cases: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    assert PHP is not None
    driver = tmp_path / "run_hook.php"
    driver.write_text(DRIVER, encoding="utf-8")
    done = subprocess.run(
        [PHP, "-d", "display_errors=stderr", str(driver), str(HOOK)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out: dict[str, Any] = json.loads(done.stdout, parse_float=Decimal, parse_int=Decimal)
    return out


def hook(request: dict[str, Any], vars_: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The hook's one return for one upgrade, and what it wrote to the activity log."""
    (result,) = run_hook([case(request, vars_)], tmp_path)["results"]
    assert result["updates"] == []  # a price is only calculated: nothing is written
    (returned,) = result["returns"]
    return {**returned, "activity": result["activity"]}


def whmcs_price(returned: dict[str, Any], vars_: dict[str, Any]) -> Decimal:
    """The price WHMCS goes on with: the hook's when it returned one (upgradefunctions.php:
    `if (isset($hookReturn["price"]))`), else its own."""
    return Decimal(str(returned.get("price", vars_["price"])))


# -- the help page's rule --------------------------------------------------------------------


@needs_php
def test_registers_on_the_upgrade_price_and_the_upgrade_applied(tmp_path: Path) -> None:
    hooks = run_hook([], tmp_path)["hooks"]
    assert hooks == ["OrderProductUpgradeOverride", "AfterProductUpgrade"]


@needs_php
@pytest.mark.parametrize(("days", "total_days"), [(184, 365), (300, 365), (1, 365), (365, 365)])
def test_help_page_example(days: int, total_days: int, tmp_path: Path) -> None:
    # Paid 100 $ a year, mid-year (or any day: the rule has no days in it) to 150 $ → 50 $.
    vars_ = upgrade_vars(2, "annually", days=days, total_days=total_days)
    returned = hook({"serviceid": "10"}, vars_, tmp_path)
    assert whmcs_price(returned, vars_) == Decimal("50")
    assert returned["activity"] == []


@needs_php
def test_a_cheaper_package_costs_nothing_never_less(tmp_path: Path) -> None:
    # Paid 100 a year, Hosting Mini is 80 a year: 80 − 100 is not a refund, it is 0.
    vars_ = upgrade_vars(3, "annually", whmcs_price="0.00")
    assert whmcs_price(hook({"serviceid": "10"}, vars_, tmp_path), vars_) == Decimal("0")


@needs_php
@pytest.mark.parametrize(
    ("service", "new_pid", "cycle", "expected"),
    [
        ("11", 2, "annually", "140"),  # paid 10 for a month, Pro for a year: 150 − 10
        ("10", 2, "Semi-Annually", "0"),  # paid 100 for a year, Pro for 6 months: 80 − 100
        ("10", 2, "monthly", "0"),  # 25 − 100
        ("11", 2, "monthly", "15"),  # 25 − 10, the same cycle
        ("10", 4, "annually", "200"),  # Radio Pro: 300 − 100
    ],
)
def test_the_chosen_period_against_the_paid_period(
    service: str, new_pid: int, cycle: str, expected: str, tmp_path: Path
) -> None:
    vars_ = upgrade_vars(new_pid, cycle)
    assert whmcs_price(hook({"serviceid": service}, vars_, tmp_path), vars_) == Decimal(expected)


@needs_php
def test_the_clients_currency(tmp_path: Path) -> None:
    # Paid 100,000 pesos a year; Pro is 150,000 pesos a year (150 in dollars).
    vars_ = upgrade_vars(2, "annually", whmcs_price="25205.48")
    assert whmcs_price(hook({"serviceid": "12"}, vars_, tmp_path), vars_) == Decimal("50000")


@needs_php
def test_exact_cents(tmp_path: Path) -> None:
    vars_ = upgrade_vars(2, "annually")
    returned = hook({"serviceid": "14"}, vars_, tmp_path)  # paid 99.99
    assert whmcs_price(returned, vars_) == Decimal("50.01")


@needs_php
def test_client_and_admin_area_name_the_service_id(tmp_path: Path) -> None:
    # upgrade.php and the admin's upgrade dialog carry the service as `id`.
    vars_ = upgrade_vars(2, "Annually")
    assert whmcs_price(hook({"id": "10"}, vars_, tmp_path), vars_) == Decimal("50")


@needs_php
@pytest.mark.parametrize(
    ("request_", "old_pid"),
    [
        ({}, 1),  # no service in the request
        ({"serviceid": "99"}, 1),  # no such service
        ({"serviceid": "10"}, 3),  # service 10 is not a Hosting Mini
    ],
)
def test_without_its_service_whmcs_keeps_its_price_and_says_why(
    request_: dict[str, Any], old_pid: int, tmp_path: Path
) -> None:
    vars_ = upgrade_vars(2, "annually", old_pid=old_pid)
    returned = hook(request_, vars_, tmp_path)
    assert "price" not in returned and whmcs_price(returned, vars_) == Decimal("25.21")
    (logged,) = returned["activity"]
    assert f"no service of product {old_pid}" in logged


@needs_php
def test_a_one_time_service_keeps_whmcs_price(tmp_path: Path) -> None:
    # The rule needs a recurring period ("100 a year"); One Time has none.
    returned = hook({"serviceid": "13"}, upgrade_vars(2, "annually"), tmp_path)
    assert returned == {"activity": []}


@needs_php
def test_a_cycle_not_sold_keeps_whmcs_price(tmp_path: Path) -> None:
    returned = hook({"serviceid": "10"}, upgrade_vars(4, "monthly"), tmp_path)
    assert "price" not in returned
    (logged,) = returned["activity"]
    assert "product 4 has no monthly price" in logged


@needs_php
@pytest.mark.parametrize(("discount", "kept"), [(60, "50"), (10, None)])
def test_a_promotion_never_exceeds_the_price(
    discount: float, kept: str | None, tmp_path: Path
) -> None:
    # WHMCS invoices price − discount: a discount it computed on its own pro-rata could
    # otherwise take a 50 difference below zero.
    returned = hook({"serviceid": "10"}, upgrade_vars(2, "annually", discount=discount), tmp_path)
    assert returned["price"] == Decimal("50")
    assert returned.get("discount") == (None if kept is None else Decimal(kept))


# -- the hook and flows.pricing.difference agree --------------------------------------------


def _cross_check_cases() -> list[tuple[str, str, str, str]]:
    """(paid, paid cycle, new price, new cycle): edges, then amounts drawn at random
    (seeded) in every pair of cycles."""
    cases = [
        ("100.00", "annually", "150.00", "annually"),
        ("100.00", "annually", "80.00", "annually"),
        ("150.00", "annually", "150.00", "annually"),
        ("10.00", "monthly", "150.00", "annually"),
        ("100.00", "annually", "25.00", "monthly"),
        ("99.99", "annually", "150.00", "annually"),
        ("0.00", "monthly", "0.01", "monthly"),
        ("19.99", "quarterly", "59.97", "semiannually"),
        ("1234567.89", "triennially", "2345678.90", "biennially"),
    ]
    draw = random.Random(10)
    for _ in range(60):
        paid, new = draw.randrange(0, 10**7), draw.randrange(0, 10**7)
        cases.append(
            (f"{paid / 100:.2f}", draw.choice(CYCLES), f"{new / 100:.2f}", draw.choice(CYCLES))
        )
    return cases


@needs_php
def test_hook_and_python_difference_agree(tmp_path: Path) -> None:
    cases = _cross_check_cases()
    php_cases = []
    for paid, paid_cycle, new_price, new_cycle in cases:
        tables = {
            "tblclients": [{"id": 1, "currency": USD}],
            "tblpricing": [pricing(2, USD, **{new_cycle: new_price})],
            "tblhosting": [hosting(10, 1, 1, WHMCS_CYCLE[paid_cycle], paid)],
        }
        php_cases.append(case({"serviceid": "10"}, upgrade_vars(2, new_cycle), tables))
    results = run_hook(php_cases, tmp_path)["results"]
    assert len(results) == len(cases)
    for (paid, _, new_price, new_cycle), result in zip(cases, results, strict=True):
        (returned,) = result["returns"]
        ours = difference(
            paid_for_current_period=Decimal(paid),
            new_price=Decimal(new_price),
            new_cycle=new_cycle,
            enabled_on=date(2026, 7, 1),
        )
        assert Decimal(str(returned["price"])) == ours.amount, (paid, new_price)


# -- the period starts on the day the upgrade is enabled ------------------------------------


def upgrade_row(uid: int, type_: str, service: int, new_value: str) -> dict[str, Any]:
    """A tblupgrades row as WHMCS 8.7 writes it: a package upgrade's newvalue is
    "<product id>,<cycle>" (upgradefunctions.php line 275)."""
    return {
        "id": uid,
        "userid": 1,
        "orderid": 100 + uid,
        "type": type_,
        "date": "2026-06-30",
        "relid": service,
        "originalvalue": "1",
        "newvalue": new_value,
        "new_cycle": "",
        "amount": "50.00",
        "recurringchange": "50.00",
        "status": "Pending",
        "paid": "Y",
    }


# The services as doUpgrade leaves them before AfterProductUpgrade: on their new package
# and cycle, with the next due date of the old period.
APPLIED: dict[str, list[dict[str, Any]]] = {
    "tblupgrades": [
        upgrade_row(1, "package", 10, "2,annually"),
        upgrade_row(2, "package", 11, "2,monthly"),
        upgrade_row(3, "configoptions", 10, "7"),  # a configurable option: 7 more GB
        upgrade_row(4, "package", 13, "5,onetime"),
        upgrade_row(5, "package", 15, "6,free"),
        upgrade_row(6, "service", 10, "2"),  # WHMCS's newer upgrade restarts the period itself
    ],
    "tblhosting": [
        hosting(10, 1, 2, "Annually", "150.00", next_due="2027-01-01"),
        hosting(11, 1, 2, "Monthly", "25.00", next_due="2026-02-15"),
        hosting(13, 1, 5, "One Time", "0.00", first_payment="300.00", next_due="0000-00-00"),
        hosting(15, 1, 6, "Free Account", "0.00", next_due="0000-00-00"),
    ],
}


def after_upgrade(
    upgrade_id: int, today: date, tmp_path: Path, tables: dict[str, Any] = APPLIED
) -> dict[str, Any]:
    """What the hook wrote when `upgrade_id` was applied on `today`."""
    (result,) = run_hook([applied(upgrade_id, today, tables)], tmp_path)["results"]
    return dict(result)


def next_dates(result: dict[str, Any], sid: int) -> tuple[str, str]:
    (row,) = [r for r in result["tables"]["tblhosting"] if r["id"] == sid]
    return row["nextduedate"], row["nextinvoicedate"]


@needs_php
@pytest.mark.parametrize(
    ("upgrade", "sid", "today", "expected"),
    [
        (1, 10, date(2026, 7, 1), "2027-07-01"),  # mid-year, a year: the help page's customer
        (2, 11, date(2026, 1, 31), "2026-02-28"),  # a month from Jan 31: February's last day
        (2, 11, date(2028, 1, 31), "2028-02-29"),  # … in a leap year
        (2, 11, date(2026, 12, 31), "2027-01-31"),  # into the next year
        (1, 10, date(2028, 2, 29), "2029-02-28"),  # a year from Feb 29
    ],
)
def test_the_period_starts_the_day_the_upgrade_is_enabled(
    upgrade: int, sid: int, today: date, expected: str, tmp_path: Path
) -> None:
    result = after_upgrade(upgrade, today, tmp_path)
    assert next_dates(result, sid) == (expected, expected)
    (update,) = result["updates"]
    assert update == {
        "table": "tblhosting",
        "ids": [sid],
        "values": {"nextduedate": expected, "nextinvoicedate": expected},
    }
    (logged,) = result["activity"]
    assert f"service {sid} starts today: next due date {expected}" in logged
    assert f"upgrade {upgrade} applied" in logged


@needs_php
@pytest.mark.parametrize(
    "upgrade",
    [
        3,  # configurable options: the package and its period stay
        4,  # now One Time: no period
        5,  # now Free Account: no period
        6,  # type service: WHMCS sets the dates itself (doUpgrade line 779)
        99,  # no such upgrade
    ],
)
def test_anything_but_a_recurring_package_upgrade_is_left_alone(
    upgrade: int, tmp_path: Path
) -> None:
    result = after_upgrade(upgrade, date(2026, 7, 1), tmp_path)
    assert (result["updates"], result["activity"]) == ([], [])
    assert result["tables"] == APPLIED


def _period_cross_check_cases() -> list[tuple[date, str]]:
    """(day applied, new cycle): every month's last day from 2026 to 2028 (a leap year),
    then days drawn at random (seeded), in every cycle."""
    days = [add_months(date(2026, 1, 31), months) for months in range(36)]
    draw = random.Random(31)
    days += [date(2024, 1, 1) + timedelta(days=draw.randrange(0, 3650)) for _ in range(40)]
    return [(day, cycle) for day in days for cycle in CYCLES]


@needs_php
def test_hook_and_python_add_months_agree(tmp_path: Path) -> None:
    cases = _period_cross_check_cases()
    php_cases = []
    for day, cycle in cases:
        tables = {
            "tblupgrades": [upgrade_row(1, "package", 10, f"2,{cycle}")],
            "tblhosting": [hosting(10, 1, 2, WHMCS_CYCLE[cycle], "150.00")],
        }
        php_cases.append(applied(1, day, tables))
    results = run_hook(php_cases, tmp_path)["results"]
    assert len(results) == len(cases)
    for (day, cycle), result in zip(cases, results, strict=True):
        (update,) = result["updates"]
        ours = add_months(day, CYCLE_MONTHS[cycle]).isoformat()
        assert update["values"]["nextduedate"] == ours, (day, cycle)


# -- the fake WHMCS is a WHMCS with this hook; the bot checks that it is there ----------------

ID, SECRET = "hook-identifier", "hook-secret"
TODAY = date(2026, 7, 1)
FAKE_DATA: dict[str, Any] = {
    "clients": [{"id": "1", "name": "Juan Perez", "email": "juan@example.com", "phone": ""}],
    "categories": [{"id": "1", "name": "Hosting"}],
    "products": [
        {
            "id": "1",
            "category": "1",
            "name": "Hosting Inicial",
            "prices": {"monthly": "10.00", "annually": "100.00"},
            "upgrades_to": ["2", "3"],
        },
        {
            "id": "2",
            "category": "1",
            "name": "Hosting Pro",
            "prices": {"monthly": "25.00", "semiannually": "80.00", "annually": "150.00"},
        },
        {"id": "3", "category": "1", "name": "Hosting Max", "prices": {"annually": "260.00"}},
    ],
    "services": [
        {
            "id": "10",
            "client": "1",
            "product": "1",
            "label": "juanperez.com.ar",
            "status": "active",
            "billing_cycle": "annually",
            "amount": "100.00",
            "next_due": "2027-01-01",
        },
        {
            "id": "11",
            "client": "1",
            "product": "1",
            "label": "tienda.juanperez.com.ar",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "next_due": "2026-07-16",
        },
    ],
}
UPGRADES = [("10", "2", "annually"), ("10", "2", "semiannually"), ("11", "2", "annually")]
UPGRADES += [("10", "3", "annually"), ("11", "2", "monthly")]


def fake_as_tables() -> dict[str, list[dict[str, Any]]]:
    """FAKE_DATA as WHMCS's tables hold it (one currency)."""
    return {
        "tblclients": [{"id": 1, "currency": USD}],
        "tblpricing": [pricing(int(p["id"]), USD, **p["prices"]) for p in FAKE_DATA["products"]],
        "tblhosting": [
            hosting(
                int(s["id"]),
                1,
                int(s["product"]),
                WHMCS_CYCLE[s["billing_cycle"]],
                s["amount"],
            )
            for s in FAKE_DATA["services"]
        ],
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeWhmcs]:
    async with FakeWhmcs(FAKE_DATA, identifier=ID, secret=SECRET, today=TODAY) as f:
        yield f


@needs_php
async def test_fake_whmcs_prices_as_the_hook_in_calculation_and_invoice(tmp_path: Path) -> None:
    hook_cases = [
        case({"serviceid": sid}, upgrade_vars(int(pid), cycle), fake_as_tables())
        for sid, pid, cycle in UPGRADES
    ]
    hook_prices = [r["returns"][0]["price"] for r in run_hook(hook_cases, tmp_path)["results"]]
    for (sid, pid, cycle), hook_price in zip(UPGRADES, hook_prices, strict=True):
        async with FakeWhmcs(FAKE_DATA, identifier=ID, secret=SECRET, today=TODAY) as fake:
            assert fake.upgrade_pricing == "difference"
            api = WhmcsApi(
                fake.base_url, identifier=ID, secret=SECRET, access_key="", timeout_seconds=5
            )
            upgrade = {"serviceid": sid, "type": "product", "newproductid": pid}
            upgrade |= {"newproductbillingcycle": cycle, "paymentmethod": "banktransfer"}
            try:
                calc = await api.call("UpgradeProduct", {**upgrade, "calconly": "true"})
                placed = await api.post("UpgradeProduct", upgrade)
            finally:
                await api.close()
            assert formatted_money(calc["price"]) == Decimal(str(hook_price)), (sid, pid, cycle)
            if hook_price == 0:  # nothing to pay: applied at once, no invoice
                assert placed["invoiceid"] == 0
            else:
                invoice = fake.invoices[int(placed["invoiceid"])]
                assert invoice.total == Decimal(str(hook_price)), (sid, pid, cycle)


async def _upgrade_applied_in_fake(
    sid: str, pid: str, cycle: str, today: date, policy: str
) -> date | None:
    """The service's next due date once the fake WHMCS has applied the upgrade (its
    invoice paid, or at once with nothing to pay)."""
    fake = FakeWhmcs(FAKE_DATA, identifier=ID, secret=SECRET, today=today)
    fake.upgrade_pricing = policy
    async with fake:
        api = WhmcsApi(
            fake.base_url, identifier=ID, secret=SECRET, access_key="", timeout_seconds=5
        )
        upgrade = {"serviceid": sid, "type": "product", "newproductid": pid}
        upgrade |= {"newproductbillingcycle": cycle, "paymentmethod": "banktransfer"}
        try:
            placed = await api.post("UpgradeProduct", upgrade)
        finally:
            await api.close()
        if placed["invoiceid"]:
            fake.pay_invoice(placed["invoiceid"])
        return fake.services[int(sid)].nextduedate


@needs_php
@pytest.mark.parametrize("today", [TODAY, date(2026, 1, 31)])
async def test_fake_whmcs_restarts_the_period_as_the_hook(today: date, tmp_path: Path) -> None:
    # The tables as doUpgrade leaves them: the service on its new package and cycle.
    hook_cases = [
        applied(
            1,
            today,
            {
                "tblupgrades": [upgrade_row(1, "package", int(sid), f"{pid},{cycle}")],
                "tblhosting": [hosting(int(sid), 1, int(pid), WHMCS_CYCLE[cycle], "0.00")],
            },
        )
        for sid, pid, cycle in UPGRADES
    ]
    results = run_hook(hook_cases, tmp_path)["results"]
    for (sid, pid, cycle), result in zip(UPGRADES, results, strict=True):
        (row,) = result["tables"]["tblhosting"]
        fake_due = await _upgrade_applied_in_fake(sid, pid, cycle, today, "difference")
        assert fake_due is not None and fake_due.isoformat() == row["nextduedate"], (sid, cycle)


async def test_fake_whmcs_without_the_hook_keeps_the_due_date() -> None:
    # WHMCS as installed (pro-rata, no hook): the old period goes on.
    assert await _upgrade_applied_in_fake("10", "2", "annually", TODAY, "prorata") == date(
        2027, 1, 1
    )


@pytest.fixture
async def billing_for(
    pool: asyncpg.Pool, fake: FakeWhmcs, tmp_path: Path
) -> AsyncIterator[Callable[[str], WhmcsBilling]]:
    """WhmcsBilling pointed at the fake, quoting by the given UPGRADE_PRICING."""
    await whmcs_index.forget_everything(pool)
    made: list[WhmcsBilling] = []

    def build(policy: str) -> WhmcsBilling:
        settings = fake.settings_for(Settings(), tmp_path / "whmcs_upgrades.toml")
        billing = WhmcsBilling(settings.with_(upgrade_pricing=policy), pool)
        made.append(billing)
        return billing

    yield build
    for billing in made:
        await billing.close()


async def test_with_the_hook_the_quote_is_what_whmcs_invoices(
    billing_for: Callable[[str], WhmcsBilling], fake: FakeWhmcs, caplog: pytest.LogCaptureFixture
) -> None:
    billing = billing_for("difference")
    with caplog.at_level(logging.WARNING, logger="bot.whmcs"):
        quote = await billing.quote_upgrade("1", "10", "2", "annually", today=TODAY)
        placed = await billing.place_upgrade(
            "1", "10", "2", "annually", today=TODAY, request_id="hook-1"
        )
    assert quote.amount == Decimal("50.00") == placed.quote.amount
    assert placed.invoice is not None and placed.invoice.total == Decimal("50.00")
    assert caplog.records == []


async def test_without_the_hook_the_quote_check_asks_for_it(
    billing_for: Callable[[str], WhmcsBilling], fake: FakeWhmcs, caplog: pytest.LogCaptureFixture
) -> None:
    fake.upgrade_pricing = "prorata"  # WHMCS as installed: its own pro-rata
    billing = billing_for("difference")
    with caplog.at_level(logging.WARNING, logger="bot.whmcs"):
        quote = await billing.quote_upgrade("1", "10", "2", "annually", today=TODAY)
    assert quote.amount == Decimal("50.00")
    (record,) = caplog.records
    assert "WHMCS calculates 25.21" in record.getMessage()
    assert "our difference quote says 50.00" in record.getMessage()
    assert "upgrade_difference.php installed" in record.getMessage()
