"""integrations/whmcs/whatsapp_alerts.php, the WHMCS hook file that forwards billing events
to POST /events, run by PHP exactly as WHMCS would load it: a small driver stubs what the
file calls (add_hook, logActivity, Capsule), loads it unmodified, runs its hooks with the
variables WHMCS 8.7 passes, and the events go over HTTP to a real running server of ours.

Expected event types come from SPEC §3's table (the WHMCS hook each alert's "when" is);
the hook variables from WHMCS 8.7's callers (e.g. includes/invoicefunctions.php
`run_hook("InvoicePaid", ["invoiceid" => $invoiceid])`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from bot.signatures import SignatureCheck, check
from tests.harness import Stack

HOOKS = Path(__file__).resolve().parent.parent / "integrations" / "whmcs" / "whatsapp_alerts.php"
PHP = shutil.which("php")
pytestmark = pytest.mark.skipif(
    PHP is None, reason="php is not installed (scripts/ensure-php installs it when run as root)"
)
SECRET = "forwarder-test-secret"
PASSWORD = "Hunter2-new-password"  # what WHMCS hands the hooks; must never leave WHMCS

# WHMCS's side, stubbed: only what the hook file calls. Notices and warnings are errors
# (an undefined key or a typo fails), except where the file silences one with @.
DRIVER = r"""<?php
namespace WHMCS\Database {
    final class Capsule
    {
        public static $tables = [];

        public static function table(string $name): Query
        {
            if (!isset(self::$tables[$name])) {
                throw new \RuntimeException("no table $name");
            }
            return new Query(self::$tables[$name]);
        }
    }

    /** Illuminate's builder, as far as the file uses it: where, first, value, get. */
    final class Query
    {
        private $rows;

        public function __construct(array $rows)
        {
            $this->rows = $rows;
        }

        public function where(string $column, $value): self
        {
            return new self(array_values(array_filter(
                $this->rows,
                function (array $row) use ($column, $value): bool {
                    if (!array_key_exists($column, $row)) {
                        throw new \RuntimeException("unknown column $column");
                    }
                    return (string) $row[$column] === (string) $value;
                }
            )));
        }

        public function first(): ?object
        {
            return $this->rows ? (object) $this->rows[0] : null;
        }

        public function value(string $column)
        {
            return $this->rows ? $this->rows[0][$column] : null;
        }

        public function get(): array
        {
            return array_map(function (array $row): object {
                return (object) $row;
            }, $this->rows);
        }
    }
}

namespace {
    use WHMCS\Database\Capsule;

    set_error_handler(function (int $level, string $message, string $file, int $line): bool {
        if (!(error_reporting() & $level)) {
            return false;  // silenced with @: PHP records it for error_get_last()
        }
        throw new ErrorException($message, 0, $level, $file, $line);
    });
    define('WHMCS', true);
    define('WHATSAPP_ALERTS_URL', $argv[2]);
    define('WHATSAPP_ALERTS_SECRET', $argv[3]);
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

    $cases = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
    require $argv[1];
    $results = [];
    foreach ($cases as $case) {
        Capsule::$tables = $case['tables'];
        $activity = [];
        $started = microtime(true);
        foreach ($hooks[$case['hook']] ?? [] as $function) {
            $function($case['vars']);  // WHMCS ignores what these hooks return
        }
        $results[] = ['activity' => $activity, 'seconds' => microtime(true) - $started];
    }
    echo json_encode(['hooks' => array_keys($hooks), 'results' => $results], JSON_THROW_ON_ERROR);
}
"""

# WHMCS's tables as far as the hooks read them: client 7 (owned by login 70), its invoices,
# a quote and a domain.
TABLES: dict[str, list[dict[str, Any]]] = {
    "tblclients": [{"id": 7, "updated_at": "2026-07-01 09:00:00"}],
    "tblusers": [{"id": 70, "updated_at": "2026-07-01 09:30:00"}],
    "tblusers_clients": [
        {"auth_user_id": 70, "client_id": 7, "owner": 1},
        {"auth_user_id": 70, "client_id": 8, "owner": 0},  # invited to 8: not its holder
    ],
    "tblinvoices": [
        {
            "id": 501,
            "userid": 7,
            "total": "150.00",
            "duedate": "2026-08-10",
            "datepaid": "0000-00-00 00:00:00",
        },
        {
            "id": 502,
            "userid": 7,
            "total": "99.90",
            "duedate": "2026-07-05",
            "datepaid": "2026-07-01 10:00:00",
        },
        {
            "id": 503,
            "userid": 7,
            "total": "12.00",
            "duedate": "2026-06-01",
            "datepaid": "0000-00-00 00:00:00",
        },
    ],
    "tblquotes": [{"id": 31, "userid": 7}, {"id": 32, "userid": 0}],
    "tbldomains": [{"id": 41, "userid": 7, "domain": "juanperez.com.ar"}],
}
MODULE_PARAMS = {
    "serviceid": 10,
    "userid": 7,
    "domain": "juanperez.com.ar",
    "addonId": 0,
    "username": "juanpere",
    "password": PASSWORD,
    "serverpassword": PASSWORD,
}
# Each WHMCS hook, the variables WHMCS 8.7 runs it with, and what SPEC §3 says arrives.
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    (
        "ClientAdd",
        {"client_id": 7, "user_id": 70, "userid": 7, "email": "juan@example.com"}
        | {"password": PASSWORD},
        "client.created",
        {},
    ),
    (
        "ClientChangePassword",
        {"userid": 7, "password": PASSWORD},
        "client.password_changed",
        {},
    ),
    (
        "UserChangePassword",
        {"userid": 70, "password": PASSWORD},
        "client.password_changed",
        {},
    ),
    (
        "InvoiceCreated",
        {"source": "autogen", "user": "system", "invoiceid": 501, "status": "Unpaid"},
        "invoice.created",
        {"invoice_id": "501", "total": "150.00", "due_date": "2026-08-10"},
    ),
    (
        "ClientEdit",
        {
            "userid": 7,
            "isOptedInToMarketingEmails": False,
            "olddata": {"email": "juan@example.com", "phonenumber": "+54.1155551234"}
            | {"city": "Rosario", "password": "old-hash"},
            "email": "juan@nuevo.com",
            "phonenumber": "+54.1155559999",
            "city": "Rosario",
            "password": PASSWORD,
        },
        "client.updated",
        {"changed": ["email", "phonenumber"]},
    ),
    (
        "InvoiceCancelled",
        {"invoiceid": 503},
        "invoice.cancelled",
        {"invoice_id": "503", "total": "12.00", "due_date": "2026-06-01"},
    ),
    (
        "InvoicePaid",
        {"invoiceid": 502},
        "invoice.paid",
        {"invoice_id": "502", "total": "99.90", "due_date": "2026-07-05"},
    ),
    (
        "AfterModuleSuspend",
        {"params": MODULE_PARAMS},
        "service.suspended",
        {"service_id": "10", "domain": "juanperez.com.ar"},
    ),
    (
        "AfterModuleUnsuspend",
        {"params": MODULE_PARAMS},
        "service.unsuspended",
        {"service_id": "10", "domain": "juanperez.com.ar"},
    ),
    (
        "AfterModuleTerminate",
        {"params": MODULE_PARAMS},
        "service.terminated",
        {"service_id": "10", "domain": "juanperez.com.ar"},
    ),
    (
        "QuoteCreated",
        {"quoteid": 31, "status": "Delivered"},
        "quote.created",
        {"quote_id": "31"},
    ),
    (
        "DomainDelete",
        {"userid": 7, "domainid": 41},
        "domain.deleted",
        {"domain_id": "41", "domain": "juanperez.com.ar"},
    ),
]


def case(hook: str, vars_: dict[str, Any]) -> dict[str, Any]:
    return {"hook": hook, "vars": vars_, "tables": TABLES}


async def run_hooks(
    cases: list[dict[str, Any]], url: str, tmp_path: Path, *, secret: str = SECRET
) -> dict[str, Any]:
    """Runs the hooks in php, asynchronously: the server answering is in this event loop."""
    assert PHP is not None
    driver = tmp_path / "run_hooks.php"
    driver.write_text(DRIVER, encoding="utf-8")
    php = await asyncio.create_subprocess_exec(
        PHP,
        "-d",
        "display_errors=stderr",
        str(driver),
        str(HOOKS),
        url,
        secret,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(php.communicate(json.dumps(cases).encode()), 60)
    assert php.returncode == 0, (out + err).decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def stored(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT id, type, client_id, data FROM events ORDER BY received_at")


class Catcher:
    """A server that keeps every raw request body; answers 202, or never while `hang`."""

    def __init__(self, *, hang: bool = False) -> None:
        self.bodies: list[bytes] = []
        self.signatures: list[str | None] = []
        self.hang = hang
        self.release = asyncio.Event()
        self.url = ""

    async def receive(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        self.signatures.append(request.headers.get("X-Signature-256"))
        if self.hang:
            await self.release.wait()
        return web.json_response({"status": "accepted"}, status=202)


@pytest.fixture
async def catcher() -> AsyncIterator[Catcher]:
    async for served in _serve(Catcher()):
        yield served


@pytest.fixture
async def hanging() -> AsyncIterator[Catcher]:
    async for served in _serve(Catcher(hang=True)):
        yield served


async def _serve(catcher: Catcher) -> AsyncIterator[Catcher]:
    app = web.Application()
    app.router.add_post("/events", catcher.receive)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    catcher.url = f"http://127.0.0.1:{runner.addresses[0][1]}/events"
    try:
        yield catcher
    finally:
        catcher.release.set()
        await runner.cleanup()


async def test_registers_the_twelve_whmcs_hooks(tmp_path: Path) -> None:
    result = await run_hooks([], "http://127.0.0.1:9/events", tmp_path)
    assert sorted(result["hooks"]) == sorted(hook for hook, *_ in CASES)


async def test_each_hook_stores_one_event_of_its_spec_type(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with Stack(database_url, events_secret=SECRET) as stack:
        result = await run_hooks(
            [case(hook, vars_) for hook, vars_, *_ in CASES], f"{stack.url}/events", tmp_path
        )
    assert [r["activity"] for r in result["results"]] == [[]] * len(CASES)
    rows = await stored(pool)
    assert [(r["type"], r["client_id"], r["data"]) for r in rows] == [
        (spec_type, "7", data) for _, _, spec_type, data in CASES
    ]
    assert len({r["id"] for r in rows}) == len(CASES)


async def test_the_same_hook_run_twice_is_stored_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    twice = [case(hook, vars_) for hook, vars_, *_ in CASES for _ in range(2)]
    async with Stack(database_url, events_secret=SECRET) as stack:
        result = await run_hooks(twice, f"{stack.url}/events", tmp_path)
    assert all(r["activity"] == [] for r in result["results"])  # the repeat is a 202 too
    assert len(await stored(pool)) == len(CASES)


async def test_a_second_change_is_a_new_event(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    repaid = {**TABLES, "tblinvoices": [{**TABLES["tblinvoices"][1]}]}
    repaid["tblinvoices"][0]["datepaid"] = "2026-07-02 08:00:00"  # unpaid, then paid again
    changed_again = {**TABLES, "tblusers": [{"id": 70, "updated_at": "2026-07-01 18:00:00"}]}
    cases = [case("InvoicePaid", {"invoiceid": 502}), case("UserChangePassword", CASES[2][1])]
    cases += [
        {"hook": "InvoicePaid", "vars": {"invoiceid": 502}, "tables": repaid},
        {"hook": "UserChangePassword", "vars": CASES[2][1], "tables": changed_again},
    ]
    async with Stack(database_url, events_secret=SECRET) as stack:
        await run_hooks(cases, f"{stack.url}/events", tmp_path)
    types = [r["type"] for r in await stored(pool)]
    assert types == ["invoice.paid", "client.password_changed"] * 2


async def test_events_are_signed_and_carry_no_password(catcher: Catcher, tmp_path: Path) -> None:
    await run_hooks([case(hook, vars_) for hook, vars_, *_ in CASES], catcher.url, tmp_path)
    assert len(catcher.bodies) == len(CASES)
    for body, signature in zip(catcher.bodies, catcher.signatures, strict=True):
        assert check(body, SECRET, signature) is SignatureCheck.VALID
        event = json.loads(body)
        assert set(event) == {"id", "type", "occurred_at", "client_id", "data"}
        assert PASSWORD.encode() not in body and b"old-hash" not in body
        assert "pass" not in json.dumps(event["data"]).lower()


async def test_a_wrong_secret_stores_nothing_and_is_logged(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with Stack(database_url, events_secret=SECRET) as stack:
        result = await run_hooks(
            [case("InvoicePaid", {"invoiceid": 502})],
            f"{stack.url}/events",
            tmp_path,
            secret="not-the-secret",
        )
    (activity,) = [r["activity"] for r in result["results"]]
    assert len(activity) == 1 and "HTTP 401" in activity[0]
    assert "not-the-secret" not in activity[0]
    assert await stored(pool) == []


async def test_a_server_that_is_down_costs_little_and_is_logged(tmp_path: Path) -> None:
    started = time.monotonic()
    down = "http://127.0.0.1:9/events"  # the discard port: nothing listens
    result = await run_hooks([case("InvoicePaid", {"invoiceid": 502})], down, tmp_path)
    assert time.monotonic() - started < 5  # php's own start included
    ((activity, seconds),) = [(r["activity"], r["seconds"]) for r in result["results"]]
    assert seconds < 2.5
    assert len(activity) == 1 and "not sent" in activity[0]


async def test_a_server_that_never_answers_is_given_two_seconds(
    hanging: Catcher, tmp_path: Path
) -> None:
    result = await run_hooks([case("QuoteCreated", {"quoteid": 31})], hanging.url, tmp_path)
    ((activity, seconds),) = [(r["activity"], r["seconds"]) for r in result["results"]]
    assert len(hanging.bodies) == 1  # it arrived; the answer never did
    assert 1.5 <= seconds < 3.0
    assert len(activity) == 1 and "QuoteCreated" in activity[0]


async def test_what_has_no_one_to_alert_is_not_sent(catcher: Catcher, tmp_path: Path) -> None:
    cases = [
        case("QuoteCreated", {"quoteid": 32, "status": "Delivered"}),  # a prospect's quote
        case("UserChangePassword", {"userid": 71, "password": PASSWORD}),  # owns no client
        case("InvoicePaid", {"invoiceid": 999}),  # not in tblinvoices
    ]
    result = await run_hooks(cases, catcher.url, tmp_path)
    assert catcher.bodies == []
    activity = [r["activity"] for r in result["results"]]
    assert activity[0] == [] and len(activity[1]) == len(activity[2]) == 1


async def test_without_settings_nothing_is_sent_and_it_says_so(tmp_path: Path) -> None:
    result = await run_hooks([case("ClientAdd", CASES[0][1])], "", tmp_path)
    ((line,),) = [r["activity"] for r in result["results"]]
    assert "WHATSAPP_ALERTS_URL" in line
