"""Nothing lost, nothing twice: real server processes killed with SIGKILL mid-run, and
two processes sharing one database."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from bot.fakes.cloud_api import FakeCloudAPI
from store.billing_local import LocalBilling
from tests.billing_fixture import JUAN_WA, bulk_clients, bulk_wa_id
from tests.harness import APP_SECRET, PHONE_ID, TOKEN, awkward_fake_options, outbox_id_of
from tests.procs import ServerProcess, free_port, server_env

# Words that always get exactly one reply (the menu), whatever the state.
ONE_REPLY_WORDS = ("hola", "menu", "inicio", "buenas", "buen dia")


def make_batches(customers: int, per_customer: int) -> list[list[wa_payloads.InboundItem]]:
    """Webhook POSTs of 1–5 messages each, customers interleaved, like Meta batches."""
    items = [
        wa_payloads.inbound_text(bulk_wa_id(1000 + c), ONE_REPLY_WORDS[(c + n) % 5])
        for n in range(per_customer)
        for c in range(customers)
    ]
    rng = random.Random(7)
    batches: list[list[wa_payloads.InboundItem]] = []
    i = 0
    while i < len(items):
        size = rng.randint(1, 5)
        batches.append(items[i : i + size])
        i += size
    return batches


async def deliver_like_meta(urls: list[str], batches: list[list[wa_payloads.InboundItem]]) -> None:
    """POST every batch until some server answers 200, retrying like Meta does."""
    queue: asyncio.Queue[tuple[int, list[wa_payloads.InboundItem]]] = asyncio.Queue()
    for n, b in enumerate(batches):
        queue.put_nowait((n, b))

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            n, batch = queue.get_nowait()
            body, headers = wa_payloads.signed_body(
                wa_payloads.messages_update(PHONE_ID, batch), APP_SECRET
            )
            attempt = 0
            while True:
                url = urls[(n + attempt) % len(urls)]
                try:
                    async with session.post(url, data=body, headers=headers) as r:
                        if r.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                attempt += 1
                await asyncio.sleep(min(1.0, 0.05 * attempt))

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(16)))


async def wait_for(predicate_count: int, fake: FakeCloudAPI, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(fake.sent) < predicate_count:
        if loop.time() > deadline:
            raise TimeoutError(f"{len(fake.sent)} of {predicate_count} replies after {timeout}s")
        await asyncio.sleep(0.1)


async def assert_exactly_one_reply_each(
    pool: asyncpg.Pool, fake: FakeCloudAPI, batches: list[list[wa_payloads.InboundItem]]
) -> None:
    expected = {item.wamid for b in batches for item in b}
    # No outbox row was sent twice…
    sends = Counter(outbox_id_of(m) for m in fake.sent)
    doubles = {k: v for k, v in sends.items() if v > 1}
    assert not doubles, f"sent more than once: {doubles}"
    # …each inbound message produced exactly one outbox row…
    rows = await pool.fetch(
        """
        SELECT i.wamid, i.status, count(o.id) AS replies
        FROM inbox i LEFT JOIN outbox o ON o.inbox_id = i.id
        GROUP BY i.wamid, i.status
        """
    )
    assert {r["wamid"] for r in rows} == expected
    assert all(r["status"] == "done" for r in rows)
    assert Counter(r["replies"] for r in rows) == Counter({1: len(expected)})
    # …and every one of those rows reached the Cloud API.
    answered = await pool.fetch(
        "SELECT o.id::text AS id, i.wamid FROM outbox o JOIN inbox i ON i.id = o.inbox_id"
    )
    assert {r["id"] for r in answered} == set(sends)
    assert len(fake.sent) == len(expected)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "topology",
    [
        pytest.param({}, id="http-and-worker-processes"),
        pytest.param({"WORKER_PROCESSES": "0"}, id="one-process"),
    ],
)
async def test_sigkill_mid_run_loses_nothing_and_doubles_nothing(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, topology: dict[str, str]
) -> None:
    await LocalBilling(pool).load(bulk_clients(200))
    batches = make_batches(customers=200, per_customer=10)  # 2,000 messages
    total = sum(len(b) for b in batches)
    assert total == 2000
    async with FakeCloudAPI(
        phone_id=PHONE_ID,
        token=TOKEN,
        app_secret=APP_SECRET,
        statuses=("sent",),
        # Statuses repeated or failed after sent, sends answered 504 after WhatsApp took
        # them (settled by their status, within AMBIGUOUS_AFTER_SECONDS).
        **awkward_fake_options(),
    ) as fake:
        port = free_port()
        fake.webhook_url = f"http://127.0.0.1:{port}/webhook"
        env = server_env(
            database_url, fake.base_url, port, AMBIGUOUS_AFTER_SECONDS="20", **topology
        )
        server = ServerProcess(env, tmp_path / "server.log")
        await server.start()
        try:
            sending = asyncio.create_task(deliver_like_meta([fake.webhook_url], batches))
            await wait_for(600, fake, timeout=60)
            server.kill()
            killed_at = len(fake.sent)
            print(f"killed after {killed_at} replies; {fake.gateway_timeouts} answered 504")
            await server.start()
            await sending
            await wait_for(total, fake, timeout=90)
            await fake.wait_statuses_delivered(timeout=30)
            await asyncio.sleep(1.0)  # would anything be sent twice, given a moment?
            assert killed_at < total, "the kill happened after the run had finished"
            await assert_exactly_one_reply_each(pool, fake, batches)
        finally:
            server.stop()


@pytest.mark.timeout(240)
async def test_two_processes_share_the_work(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await LocalBilling(pool).load(bulk_clients(200))
    batches = make_batches(customers=200, per_customer=5)  # 1,000 messages
    total = sum(len(b) for b in batches)
    async with FakeCloudAPI(
        phone_id=PHONE_ID, token=TOKEN, app_secret=APP_SECRET, statuses=("sent",)
    ) as fake:
        servers = []
        for n in range(2):
            port = free_port()
            env = server_env(database_url, fake.base_url, port)
            servers.append(ServerProcess(env, tmp_path / f"server{n}.log"))
        fake.webhook_url = f"{servers[0].url}/webhook"
        try:
            await asyncio.gather(*(s.start() for s in servers))
            await deliver_like_meta([f"{s.url}/webhook" for s in servers], batches)
            await wait_for(total, fake, timeout=90)
            await asyncio.sleep(1.0)
            await assert_exactly_one_reply_each(pool, fake, batches)
            # Both processes did part of the work.
            by_process = await pool.fetch(
                "SELECT processed_by, count(*) AS n FROM inbox GROUP BY processed_by"
            )
            assert len(by_process) == 2, by_process
            assert all(r["n"] > 0 for r in by_process)
        finally:
            for s in servers:
                s.stop()


@pytest.mark.timeout(180)
async def test_one_command_several_processes_on_one_port(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """PROCESSES=2 WORKER_PROCESSES=2: two HTTP processes share the port, two background
    processes share the work; SIGTERM stops them all."""
    await LocalBilling(pool).load(bulk_clients(100))
    batches = make_batches(customers=100, per_customer=4)
    total = sum(len(b) for b in batches)
    async with FakeCloudAPI(
        phone_id=PHONE_ID, token=TOKEN, app_secret=APP_SECRET, statuses=("sent",)
    ) as fake:
        port = free_port()
        fake.webhook_url = f"http://127.0.0.1:{port}/webhook"
        server = ServerProcess(
            server_env(database_url, fake.base_url, port, PROCESSES="2", WORKER_PROCESSES="2"),
            tmp_path / "server.log",
        )
        await server.start()
        try:
            # A first wave while the background processes start (healthy means the HTTP
            # ones answer; a background one may still be opening its connections)...
            first, rest = batches[:10], batches[10:]
            await deliver_like_meta([fake.webhook_url], first)
            await wait_for(sum(len(b) for b in first), fake, timeout=60)
            # ...then the rest, which both have up and running to share.
            await deliver_like_meta([fake.webhook_url], rest)
            await wait_for(total, fake, timeout=60)
            await asyncio.sleep(1.0)
            await assert_exactly_one_reply_each(pool, fake, batches)
            by_process = await pool.fetch("SELECT DISTINCT processed_by FROM inbox")
            assert len(by_process) == 2, by_process
        finally:
            code = server.stop()
        assert code == 0, server.logs()


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.timeout(120)
async def test_children_die_with_the_supervisor(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """SIGKILL to the supervisor alone (an OOM kill, say): its HTTP and background
    processes go with it, and a new server can take the port at once."""
    async with FakeCloudAPI(phone_id=PHONE_ID, token=TOKEN, app_secret=APP_SECRET) as fake:
        port = free_port()
        server = ServerProcess(server_env(database_url, fake.base_url, port), tmp_path / "a.log")
        await server.start()
        assert server.proc is not None
        children = _children(server.proc.pid)
        assert len(children) >= 2, children  # the HTTP process and the background one
        try:
            server.proc.kill()  # the supervisor only
            server.proc.wait(10)
            deadline = asyncio.get_running_loop().time() + 10
            while any(_alive(c) for c in children):
                assert asyncio.get_running_loop().time() < deadline, "children outlived it"
                await asyncio.sleep(0.05)
            again = ServerProcess(server_env(database_url, fake.base_url, port), tmp_path / "b.log")
            await again.start()
            again.stop()
        finally:
            server.stop()


@pytest.mark.timeout(90)
async def test_the_background_process_is_woken_by_notify(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """The HTTP process stores a message and the idle background process, another process,
    picks it up at once: woken by LISTEN/NOTIFY, not by its fallback look every minute."""
    async with FakeCloudAPI(
        phone_id=PHONE_ID, token=TOKEN, app_secret=APP_SECRET, statuses=()
    ) as fake:
        port = free_port()
        fake.webhook_url = f"http://127.0.0.1:{port}/webhook"
        server = ServerProcess(
            server_env(database_url, fake.base_url, port, DISPATCH_IDLE_SECONDS="60"),
            tmp_path / "server.log",
        )
        await server.start()
        try:
            for n in range(1, 4):
                await asyncio.sleep(1.0)  # every worker idle, waiting
                _, status = await fake.send_inbound(wa_payloads.inbound_text(JUAN_WA, "hola"))
                assert status == 200
                # Far less than the 60 s fallback; generous for a loaded machine.
                await fake.wait_for_sends(n, timeout=10)
        finally:
            assert server.stop() == 0, server.logs()
