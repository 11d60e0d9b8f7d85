"""The local billing backend (`BILLING_BACKEND=local`, the default and the sandbox's):
clients, products, services, invoices and domains in our own PostgreSQL, written only
through this class.

It behaves as a billing system would: placing an upgrade generates an unpaid invoice;
paying it applies the upgrade; paying a renewal moves the service's period one cycle on;
every change a customer would be told about (invoice created or paid, service
suspended…) emits the matching event into `events`, in the same transaction as the
change, for the alerts to turn into WhatsApp messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from flows.alerts import facts_from_data
from flows.billing import (
    ALREADY_REQUESTED,
    NOT_FOUND,
    NOT_OFFERED,
    NOT_VERIFIED,
    SAME_CLIENT,
    SERVICE_NOT_ACTIVE,
    UNPAID_INVOICES,
    UPGRADE_PENDING,
    BillingRefused,
    CancellationKind,
    CancellationRequest,
    Category,
    Client,
    ClientLookup,
    Domain,
    EventFacts,
    ExpiredUpgrade,
    Found,
    Invoice,
    PendingUpgrade,
    PlacedUpgrade,
    Product,
    Segment,
    Service,
    TransferResult,
    UpgradeOption,
    ensure_upgradable,
    offerable,
    upgrade_quote,
)
from flows.phones import phone_key, wa_id_key
from flows.pricing import Policy, UpgradeQuote, add_months, cycle_months
from store.billing_import import SECTIONS, ImportProblems, KnownIds, validate
from store.db import Conn

_CLIENT = "SELECT id, name, email, verified, account_manager, phone FROM billing_clients"
_SERVICE = """
    SELECT s.id, s.client_id, s.product_id, p.name AS product_name, p.category_id, s.label,
           s.status, s.billing_cycle, s.amount, s.period_start, s.next_due
    FROM billing_services AS s JOIN billing_products AS p ON p.id = s.product_id
"""
_INVOICE = "SELECT id, client_id, service_id, total, status, due FROM billing_invoices"
_DOMAIN = "SELECT id, client_id, name, status, auto_renew, next_due FROM billing_domains"
# The invoice events whose alert names the package an upgrade invoice moves to.
_UPGRADE_EVENTS = frozenset({"invoice.created", "invoice.paid", "invoice.cancelled"})
# Products with their prices as {cycle: amount}; the caller adds WHERE and GROUP BY p.id.
_PRODUCT = """
    SELECT p.id, p.category_id, p.name,
           coalesce(jsonb_object_agg(pp.cycle, pp.amount::text)
                    FILTER (WHERE pp.cycle IS NOT NULL), '{}') AS prices
    FROM billing_products AS p
    LEFT JOIN billing_product_prices AS pp ON pp.product_id = p.id
"""


class LocalBilling:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        default_region: str = "AR",
        policy: Policy = Policy.DIFFERENCE,
        panel_url: str = "https://www.paneldecliente.com",
        timezone: str = "UTC",
    ) -> None:
        self.pool = pool
        self.default_region = default_region
        self.policy = policy
        self.panel_url = panel_url.rstrip("/")
        # The company's calendar: a payment at 22:00 in Buenos Aires is that day's.
        self.zone = ZoneInfo(timezone)

    def today(self) -> date:
        """The date in the company's time zone (DISPLAY_TIMEZONE)."""
        return datetime.now(self.zone).date()

    # -- who is writing ---------------------------------------------------------------
    async def find_client_by_phone(self, wa_id: str) -> ClientLookup:
        key = wa_id_key(wa_id)
        if key is None:
            return ClientLookup(Found.NONE)
        rows = await self.pool.fetch(f"{_CLIENT} WHERE phone_key = $1 ORDER BY id LIMIT 2", key)
        if not rows:
            return ClientLookup(Found.NONE)
        if len(rows) > 1:
            return ClientLookup(Found.SEVERAL)
        return ClientLookup(Found.ONE, _client(rows[0]))

    async def get_client(self, client_id: str) -> Client | None:
        row = await self.pool.fetchrow(f"{_CLIENT} WHERE id = $1", client_id)
        return _client(row) if row else None

    async def find_client_by_email(self, email: str) -> Client | None:
        row = await self.pool.fetchrow(f"{_CLIENT} WHERE lower(email) = lower($1)", email.strip())
        return _client(row) if row else None

    # -- what they have ---------------------------------------------------------------
    async def list_services(self, client_id: str) -> list[Service]:
        rows = await self.pool.fetch(f"{_SERVICE} WHERE s.client_id = $1 ORDER BY s.id", client_id)
        return [_service(r) for r in rows]

    async def get_service(self, client_id: str, service_id: str) -> Service | None:
        row = await self.pool.fetchrow(
            f"{_SERVICE} WHERE s.id = $1 AND s.client_id = $2", service_id, client_id
        )
        return _service(row) if row else None

    async def list_invoices(
        self, client_id: str, *, service_id: str | None = None, status: str | None = None
    ) -> list[Invoice]:
        rows = await self.pool.fetch(
            f"""{_INVOICE} WHERE client_id = $1
                AND ($2::text IS NULL OR service_id = $2)
                AND ($3::text IS NULL OR status = $3)
                ORDER BY due NULLS LAST, id""",
            client_id,
            service_id,
            status,
        )
        return [_invoice(r) for r in rows]

    async def list_domains(self, client_id: str) -> list[Domain]:
        rows = await self.pool.fetch(f"{_DOMAIN} WHERE client_id = $1 ORDER BY name", client_id)
        return [_domain(r) for r in rows]

    async def invoice_link(self, client_id: str, invoice_id: str) -> str:
        owner = await self.pool.fetchval(
            "SELECT client_id FROM billing_invoices WHERE id = $1", invoice_id
        )
        if owner != client_id:
            raise BillingRefused(NOT_FOUND, f"invoice {invoice_id}")
        return self._invoice_url(invoice_id)

    def _invoice_url(self, invoice_id: str) -> str:
        return f"{self.panel_url}/viewinvoice.php?id={invoice_id}"

    # -- upgrades -----------------------------------------------------------------------
    async def upgrade_options(self, client_id: str, service_id: str) -> list[UpgradeOption]:
        service = await self._own_service(client_id, service_id)
        ensure_upgradable(service)
        products = await self._upgrade_targets(service)
        by_category: dict[str, list[Product]] = {}
        for product in products:
            by_category.setdefault(product.category_id, []).append(product)
        if not by_category:
            return []
        rows = await self.pool.fetch(
            "SELECT id, name FROM billing_categories WHERE id = ANY($1::text[]) ORDER BY name",
            list(by_category),
        )
        return [
            UpgradeOption(Category(r["id"], r["name"]), tuple(by_category[r["id"]])) for r in rows
        ]

    async def products_for(self, client_id: str) -> list[Product]:
        rows = await self.pool.fetch(f"{_PRODUCT} GROUP BY p.id ORDER BY p.name")
        return [_product(r) for r in rows]

    async def quote_upgrade(
        self, client_id: str, service_id: str, product_id: str, cycle: str, *, today: date
    ) -> UpgradeQuote:
        service = await self._own_service(client_id, service_id)
        product = await self._offered(service, product_id)
        return upgrade_quote(self.policy, service, product, cycle, today=today)

    async def place_upgrade(
        self,
        client_id: str,
        service_id: str,
        product_id: str,
        cycle: str,
        *,
        today: date,
        request_id: str,
    ) -> PlacedUpgrade:
        async with self.pool.acquire() as conn, conn.transaction():
            # One order of a service at a time: a second request waits here, then finds
            # the first one's invoice pending (or, the same request, its answer).
            await conn.execute("SELECT FROM billing_services WHERE id = $1 FOR UPDATE", service_id)
            done = await conn.fetchrow(
                "SELECT * FROM billing_upgrade_orders WHERE request_id = $1",
                request_id,
            )
            if done is not None:
                # Asked again: the first answer (the service may have moved on since).
                return await self._placed_before(conn, done, today)
            pending = await self._pending_upgrade(conn, client_id, service_id)
            if pending is not None:
                raise BillingRefused(UPGRADE_PENDING, pending.invoice_id)
            service = await self._own_service(client_id, service_id)
            product = await self._offered(service, product_id)
            quote = upgrade_quote(self.policy, service, product, cycle, today=today)
            if quote.amount == 0:
                # Nothing to pay: applied at once, with no invoice (as WHMCS does).
                order = await self._order(
                    conn,
                    None,
                    service_id=service_id,
                    product_id=product_id,
                    quote=quote,
                    request_id=request_id,
                )
                await self._apply_order(conn, order, today)
                return PlacedUpgrade(quote, product, None, None)
            number = await conn.fetchval("SELECT nextval('billing_invoice_number')")
            invoice = Invoice(
                id=f"UPG-{number}",
                client_id=client_id,
                service_id=service_id,
                total=quote.amount,
                status="unpaid",
                due=today,
            )
            await conn.execute(
                """
                INSERT INTO billing_invoices
                    (id, client_id, service_id, total, status, due, created_by_bot, request_id)
                VALUES ($1, $2, $3, $4, 'unpaid', $5, true, $6)
                """,
                invoice.id,
                client_id,
                service_id,
                invoice.total,
                invoice.due,
                request_id,
            )
            await self._order(
                conn,
                invoice.id,
                service_id=service_id,
                product_id=product_id,
                quote=quote,
                request_id=request_id,
            )
            await self._emit(conn, "invoice.created", client_id, self._invoice_data(invoice))
        return PlacedUpgrade(quote, product, invoice, self._invoice_url(invoice.id))

    async def pending_upgrade(self, client_id: str, service_id: str) -> PendingUpgrade | None:
        """The service's upgrade order whose invoice is unpaid (billing_upgrade_orders:
        every upgrade ordered here is the bot's), if the service is this client's."""
        async with self.pool.acquire() as conn:
            return await self._pending_upgrade(conn, client_id, service_id)

    async def _pending_upgrade(
        self, conn: Conn, client_id: str, service_id: str
    ) -> PendingUpgrade | None:
        row = await conn.fetchrow(
            """
            SELECT o.service_id, o.product_id, p.name AS product_name, i.id AS invoice_id,
                   i.total, i.created_at
            FROM billing_upgrade_orders AS o
            JOIN billing_invoices AS i ON i.id = o.invoice_id
            JOIN billing_services AS s ON s.id = o.service_id
            JOIN billing_products AS p ON p.id = o.product_id
            WHERE o.service_id = $2 AND s.client_id = $1 AND i.client_id = $1
                AND i.status = 'unpaid' AND o.applied_at IS NULL
            ORDER BY i.created_at DESC, o.id DESC LIMIT 1
            """,
            client_id,
            service_id,
        )
        if row is None:
            return None
        return PendingUpgrade(
            service_id=row["service_id"],
            product_id=row["product_id"],
            product_name=row["product_name"],
            invoice_id=row["invoice_id"],
            invoice_url=self._invoice_url(row["invoice_id"]),
            total=Decimal(row["total"]),
            ordered_on=row["created_at"].astimezone(self.zone).date(),
        )

    async def expire_upgrades(self, placed_before: datetime) -> list[ExpiredUpgrade]:
        """Cancel the unpaid invoices of the upgrades ordered before `placed_before` (the
        invoice's creation), as `cancel_invoice` does: invoice.cancelled is emitted in the
        same transaction. The order stays, never applied (a cancelled invoice cannot be
        paid). One transaction; invoices another process is expiring at this instant are
        skipped (it does them), and one cancelled already is not looked at again: run
        twice or from two processes, each invoice is cancelled, and announced, once."""
        if placed_before.tzinfo is None:
            raise ValueError("placed_before must be timezone-aware")
        expired: list[ExpiredUpgrade] = []
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT i.id, o.service_id FROM billing_invoices AS i
                JOIN billing_upgrade_orders AS o ON o.invoice_id = i.id
                WHERE i.status = 'unpaid' AND i.created_by_bot AND i.created_at < $1
                    AND o.applied_at IS NULL
                ORDER BY i.created_at, i.id
                FOR UPDATE OF i SKIP LOCKED
                """,
                placed_before,
            )
            for row in rows:
                invoice = await self._cancel(conn, row["id"])
                expired.append(ExpiredUpgrade(invoice.client_id, row["service_id"], invoice.id))
        return expired

    async def _order(
        self,
        conn: Conn,
        invoice_id: str | None,
        *,
        service_id: str,
        product_id: str,
        quote: UpgradeQuote,
        request_id: str,
    ) -> asyncpg.Record:
        order = await conn.fetchrow(
            """
            INSERT INTO billing_upgrade_orders (invoice_id, service_id, product_id,
                billing_cycle, new_recurring, policy, next_due, request_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            RETURNING *
            """,
            invoice_id,
            service_id,
            product_id,
            quote.cycle,
            quote.new_recurring,
            quote.policy.value,
            quote.next_due if quote.policy is Policy.PRORATA else None,
            request_id,
        )
        assert order is not None
        return order

    async def _placed_before(self, conn: Conn, order: asyncpg.Record, today: date) -> PlacedUpgrade:
        """The answer a request got the first time it was asked."""
        product = await conn.fetchrow(
            f"{_PRODUCT} WHERE p.id = $1 GROUP BY p.id", order["product_id"]
        )
        assert product is not None
        invoice = None
        if order["invoice_id"] is not None:
            row = await conn.fetchrow(f"{_INVOICE} WHERE id = $1", order["invoice_id"])
            assert row is not None
            invoice = _invoice(row)
        amount = invoice.total if invoice is not None else Decimal("0.00")
        quote = UpgradeQuote(
            amount=amount,
            policy=Policy(order["policy"]),
            cycle=order["billing_cycle"],
            new_recurring=order["new_recurring"],
            next_due=order["next_due"] or add_months(today, cycle_months(order["billing_cycle"])),
        )
        url = self._invoice_url(invoice.id) if invoice is not None else None
        return PlacedUpgrade(quote, _product(product), invoice, url)

    async def _own_service(self, client_id: str, service_id: str) -> Service:
        service = await self.get_service(client_id, service_id)
        if service is None:
            raise BillingRefused(NOT_FOUND, f"service {service_id}")
        return service

    async def _paths(self, service: Service, only: str | None = None) -> list[Product]:
        """The packages this service's product can move to automatically (`upgrades_to`),
        or just `only` if it is one of them."""
        rows = await self.pool.fetch(
            """
            SELECT p.id, p.category_id, p.name,
                   coalesce(jsonb_object_agg(pp.cycle, pp.amount::text)
                            FILTER (WHERE pp.cycle IS NOT NULL), '{}') AS prices
            FROM billing_product_upgrades AS u
            JOIN billing_products AS p ON p.id = u.target_id
            LEFT JOIN billing_product_prices AS pp ON pp.product_id = p.id
            WHERE u.product_id = $1 AND ($2::text IS NULL OR u.target_id = $2)
            GROUP BY p.id ORDER BY p.name
            """,
            service.product_id,
            only,
        )
        return [_product(r) for r in rows]

    async def _upgrade_targets(self, service: Service) -> list[Product]:
        return [p for p in await self._paths(service) if offerable(self.policy, service, p)]

    async def _offered(self, service: Service, product_id: str) -> Product:
        """The product if the systems can move this service to it automatically; a
        downgrade among the paths is refused by upgrade_quote with its own reason."""
        paths = await self._paths(service, only=product_id)
        if not paths:
            raise BillingRefused(NOT_OFFERED, f"{service.product_id} → {product_id}")
        return paths[0]

    # -- cancellations, domains, transfers ---------------------------------------------
    async def request_cancellation(
        self,
        client_id: str,
        service_id: str,
        kind: CancellationKind,
        reason: str,
        *,
        request_id: str,
    ) -> CancellationRequest:
        await self._own_service(client_id, service_id)
        async with self.pool.acquire() as conn, conn.transaction():
            # One at a time per service: asked concurrently, the second waits here.
            await conn.execute(
                "SELECT 1 FROM billing_services WHERE id = $1 FOR UPDATE", service_id
            )
            row = await conn.fetchrow(
                """
                SELECT id, service_id, type, reason, requested_at
                FROM billing_cancellation_requests WHERE request_id = $1
                """,
                request_id,
            )
            if row is None and await conn.fetchval(
                "SELECT 1 FROM billing_cancellation_requests WHERE service_id = $1", service_id
            ):
                # Another request for this service exists: a second is never created.
                raise BillingRefused(ALREADY_REQUESTED, service_id)
            if row is None:
                row = await conn.fetchrow(
                    """
                    INSERT INTO billing_cancellation_requests
                        (id, service_id, type, reason, request_id)
                    VALUES ('CAN-' || nextval('billing_cancellation_number'), $1, $2, $3, $4)
                    RETURNING id, service_id, type, reason, requested_at
                    """,
                    service_id,
                    kind.value,
                    reason,
                    request_id,
                )
        assert row is not None
        return _cancellation(row)

    async def cancellation_requested(self, client_id: str, service_id: str) -> datetime | None:
        requested: datetime | None = await self.pool.fetchval(
            """
            SELECT max(r.requested_at) FROM billing_cancellation_requests AS r
            JOIN billing_services AS s ON s.id = r.service_id
            WHERE r.service_id = $1 AND s.client_id = $2
            """,
            service_id,
            client_id,
        )
        return requested

    async def stop_domain_renewal(self, client_id: str, domain_id: str) -> Domain:
        row = await self.pool.fetchrow(
            """
            UPDATE billing_domains SET auto_renew = false
            WHERE id = $1 AND client_id = $2
            RETURNING id, client_id, name, status, auto_renew, next_due
            """,
            domain_id,
            client_id,
        )
        if row is None:
            raise BillingRefused(NOT_FOUND, f"domain {domain_id}")
        return _domain(row)

    async def transfer_service(
        self, client_id: str, service_id: str, to_client_id: str, *, request_id: str
    ) -> TransferResult:
        """Move the service to another client after the help page's checks: both
        accounts verified, the service active and fully paid, two different clients."""
        if client_id == to_client_id:
            raise BillingRefused(SAME_CLIENT)
        async with self.pool.acquire() as conn, conn.transaction():
            service = await conn.fetchrow(
                "SELECT client_id, status FROM billing_services WHERE id = $1 FOR UPDATE",
                service_id,
            )
            if service is None or service["client_id"] not in (client_id, to_client_id):
                raise BillingRefused(NOT_FOUND, f"service {service_id}")
            if service["client_id"] == to_client_id:
                # Already moved: this request (or its twin) was carried out before.
                return TransferResult.DONE
            verified = await conn.fetch(
                "SELECT id, verified FROM billing_clients WHERE id = ANY($1::text[])",
                [client_id, to_client_id],
            )
            if len(verified) != 2:
                raise BillingRefused(NOT_FOUND, "client")
            if not all(r["verified"] for r in verified):
                raise BillingRefused(NOT_VERIFIED)
            if service["status"] != "active":
                raise BillingRefused(SERVICE_NOT_ACTIVE, service["status"])
            unpaid = await conn.fetchval(
                "SELECT count(*) FROM billing_invoices WHERE service_id = $1 AND status = 'unpaid'",
                service_id,
            )
            if unpaid:
                raise BillingRefused(UNPAID_INVOICES, f"{unpaid} unpaid")
            await conn.execute(
                "UPDATE billing_services SET client_id = $2, updated_at = now() WHERE id = $1",
                service_id,
                to_client_id,
            )
        return TransferResult.DONE

    # -- alerts and broadcasts -----------------------------------------------------------
    async def refresh_client(self, client_id: str) -> Client | None:
        return await self.get_client(client_id)  # our own tables: always current

    async def event_facts(
        self, client_id: str, event_type: str, data: Mapping[str, Any]
    ) -> EventFacts:
        """The event's data, completed from our tables when it came with ids only (an
        event posted to /events rather than emitted here); only this client's records."""
        facts = facts_from_data(data)
        if facts.invoice_id and facts.upgrade_to is None and event_type in _UPGRADE_EVENTS:
            # The package an upgrade's invoice moves the service to.
            upgrade_to = await self.pool.fetchval(
                """
                SELECT p.name FROM billing_upgrade_orders AS o
                JOIN billing_invoices AS i ON i.id = o.invoice_id
                JOIN billing_products AS p ON p.id = o.product_id
                WHERE o.invoice_id = $1 AND i.client_id = $2
                """,
                facts.invoice_id,
                client_id,
            )
            # Every local upgrade order is the bot's (the local backend has no client area).
            facts = replace(facts, upgrade_to=upgrade_to, ordered_in_chat=upgrade_to is not None)
        if facts.invoice_id and (facts.total is None or facts.due is None or facts.url is None):
            row = await self.pool.fetchrow(
                f"{_INVOICE} WHERE id = $1 AND client_id = $2", facts.invoice_id, client_id
            )
            if row is not None:
                invoice = _invoice(row)
                facts = replace(
                    facts,
                    total=facts.total if facts.total is not None else invoice.total,
                    due=facts.due or invoice.due,
                    url=facts.url or self._invoice_url(invoice.id),
                )
        service_id = data.get("service_id")
        if facts.service is None and isinstance(service_id, str | int):
            label = await self.pool.fetchval(
                "SELECT label FROM billing_services WHERE id = $1 AND client_id = $2",
                str(service_id),
                client_id,
            )
            facts = replace(facts, service=label)
        if facts.quote_id and (facts.total is None or facts.url is None):
            row = await self.pool.fetchrow(
                "SELECT subject, total, valid_until FROM billing_quotes"
                " WHERE id = $1 AND client_id = $2",
                facts.quote_id,
                client_id,
            )
            if row is not None:
                facts = replace(
                    facts,
                    total=facts.total if facts.total is not None else row["total"],
                    subject=facts.subject or row["subject"],
                    valid_until=facts.valid_until or row["valid_until"],
                    url=facts.url or f"{self.panel_url}/viewquote.php?id={facts.quote_id}",
                )
        return facts

    async def segment_clients(self, segment: Segment) -> list[str]:
        queries = {
            "all": "SELECT id FROM billing_clients",
            "product": "SELECT client_id FROM billing_services"
            " WHERE product_id = $1 AND status = 'active'",
            "server": "SELECT client_id FROM billing_services"
            " WHERE server = $1 AND status = 'active'",
            "unpaid": "SELECT client_id FROM billing_invoices WHERE status = 'unpaid'",
        }
        query = f"SELECT DISTINCT id FROM ({queries[segment.kind]}) AS s(id) ORDER BY id"
        args = [segment.value] if segment.kind in ("product", "server") else []
        return [r["id"] for r in await self.pool.fetch(query, *args)]

    # -- what a billing system's staff or its cron does (CLI and sandbox) -------------
    async def pay_invoice(self, invoice_id: str, *, today: date | None = None) -> Invoice:
        """Record the payment, apply what it pays for and emit the events, once: an
        invoice that is not unpaid is refused and nothing changes.

        An upgrade invoice applies its upgrade. Any other invoice of a service is a
        renewal: the paid period moves one cycle on and a suspension for non-payment is
        lifted when nothing overdue is left, as WHMCS does on paying a service's invoice
        (makeHostingPayment)."""
        today = today or self.today()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"{_INVOICE} WHERE id = $1 FOR UPDATE", invoice_id)
            if row is None:
                raise BillingRefused(NOT_FOUND, f"invoice {invoice_id}")
            invoice = _invoice(row)
            if invoice.status != "unpaid":
                raise BillingRefused("invoice_not_unpaid", f"{invoice_id} is {invoice.status}")
            await conn.execute(
                "UPDATE billing_invoices SET status = 'paid' WHERE id = $1", invoice_id
            )
            invoice = _replace_status(invoice, "paid")
            await self._emit(conn, "invoice.paid", invoice.client_id, self._invoice_data(invoice))
            order = await conn.fetchrow(
                "SELECT * FROM billing_upgrade_orders WHERE invoice_id = $1", invoice_id
            )
            if order is not None:
                if order["applied_at"] is None:
                    await self._apply_order(conn, order, today)
            elif invoice.service_id is not None:
                await self._renew(conn, invoice.service_id)
                await self._lift_suspension(conn, invoice.service_id, today)
        return invoice

    async def _apply_order(self, conn: Conn, order: asyncpg.Record, today: date) -> None:
        # The difference policy restarts the period the day the new plan is enabled.
        next_due = order["next_due"] or add_months(today, cycle_months(order["billing_cycle"]))
        period_start = today if order["next_due"] is None else None
        await conn.execute(
            """
            UPDATE billing_services SET product_id = $2, billing_cycle = $3, amount = $4,
                period_start = coalesce($5, period_start), next_due = $6, updated_at = now()
            WHERE id = $1
            """,
            order["service_id"],
            order["product_id"],
            order["billing_cycle"],
            order["new_recurring"],
            period_start,
            next_due,
        )
        await conn.execute(
            "UPDATE billing_upgrade_orders SET applied_at = now() WHERE id = $1", order["id"]
        )

    async def _renew(self, conn: Conn, service_id: str) -> None:
        """One more cycle paid: the period that was due starts, and the next one is due a
        cycle later (from the old due date, not the payment's: paying late does not shift
        the calendar; clamped to the month's end as quotes are). WHMCS moves its next due
        date the same way. A service with no due date has no period to move."""
        row = await conn.fetchrow(
            "SELECT billing_cycle, next_due FROM billing_services WHERE id = $1 FOR UPDATE",
            service_id,
        )
        assert row is not None  # the invoice's foreign key
        if row["next_due"] is None:
            return
        await conn.execute(
            """
            UPDATE billing_services SET period_start = $2, next_due = $3, updated_at = now()
            WHERE id = $1
            """,
            service_id,
            row["next_due"],
            add_months(row["next_due"], cycle_months(row["billing_cycle"])),
        )

    async def _lift_suspension(self, conn: Conn, service_id: str, today: date) -> None:
        """Reactivate a suspended service once no renewal invoice of it is overdue. One
        not yet due does not count (WHMCS unsuspends when the payment brings the next due
        date back to today or later); an unpaid upgrade invoice is an order, not a debt.
        The local data records no reason for a suspension, so every one is taken as for
        non-payment — as WHMCS takes a suspension with no reason given."""
        row = await conn.fetchrow(
            """
            UPDATE billing_services AS s SET status = 'active', updated_at = now()
            WHERE s.id = $1 AND s.status = 'suspended' AND NOT EXISTS (
                SELECT 1 FROM billing_invoices AS i
                WHERE i.service_id = s.id AND i.status = 'unpaid'
                    AND (i.due IS NULL OR i.due < $2)
                    AND NOT EXISTS (
                        SELECT 1 FROM billing_upgrade_orders AS u WHERE u.invoice_id = i.id))
            RETURNING client_id, label
            """,
            service_id,
            today,
        )
        if row is not None:
            await self._emit(
                conn,
                "service.unsuspended",
                row["client_id"],
                {"service_id": service_id, "service": row["label"]},
            )

    async def set_service_status(self, service_id: str, status: str) -> Service:
        """suspend / unsuspend (active) / terminate, emitting the matching event."""
        event = {
            "suspended": "service.suspended",
            "active": "service.unsuspended",
            "terminated": "service.terminated",
        }.get(status)
        if event is None:
            raise ValueError(f"cannot set a service to {status!r}")
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE billing_services SET status = $2, updated_at = now() WHERE id = $1 "
                "RETURNING client_id, label",
                service_id,
                status,
            )
            if row is None:
                raise BillingRefused(NOT_FOUND, f"service {service_id}")
            await self._emit(
                conn, event, row["client_id"], {"service_id": service_id, "service": row["label"]}
            )
            service = await conn.fetchrow(f"{_SERVICE} WHERE s.id = $1", service_id)
        assert service is not None
        return _service(service)

    async def cancel_invoice(self, invoice_id: str) -> Invoice:
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._cancel(conn, invoice_id)

    async def _cancel(self, conn: Conn, invoice_id: str) -> Invoice:
        """Cancel an unpaid invoice and emit invoice.cancelled, in the caller's
        transaction; any other is refused and nothing changes."""
        status = await conn.fetchval(
            "SELECT status FROM billing_invoices WHERE id = $1 FOR UPDATE", invoice_id
        )
        if status is None:
            raise BillingRefused(NOT_FOUND, f"invoice {invoice_id}")
        if status != "unpaid":
            raise BillingRefused("invoice_not_unpaid", f"{invoice_id} is {status}")
        row = await conn.fetchrow(
            "UPDATE billing_invoices SET status = 'cancelled' WHERE id = $1 "
            "RETURNING id, client_id, service_id, total, status, due",
            invoice_id,
        )
        assert row is not None
        invoice = _invoice(row)
        await self._emit(conn, "invoice.cancelled", invoice.client_id, self._invoice_data(invoice))
        return invoice

    async def create_quote(
        self, client_id: str, total: Decimal, *, subject: str = "", valid_until: date | None = None
    ) -> str:
        if not total.is_finite() or total < 0:
            raise BillingRefused("invalid_amount", f"{total} is not an amount")
        async with self.pool.acquire() as conn, conn.transaction():
            quote_id = await conn.fetchval(
                """
                INSERT INTO billing_quotes (id, client_id, subject, total, valid_until)
                VALUES ('Q-' || nextval('billing_quote_number'), $1, $2, $3, $4) RETURNING id
                """,
                client_id,
                subject,
                total,
                valid_until,
            )
            await self._emit(
                conn,
                "quote.created",
                client_id,
                {
                    "quote_id": quote_id,
                    "subject": subject,
                    "total": str(total),
                    "valid_until": valid_until.isoformat() if valid_until else None,
                    "url": f"{self.panel_url}/viewquote.php?id={quote_id}",
                },
            )
        return str(quote_id)

    async def delete_domain(self, domain_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM billing_domains WHERE id = $1 RETURNING client_id, name", domain_id
            )
            if row is None:
                raise BillingRefused(NOT_FOUND, f"domain {domain_id}")
            await self._emit(
                conn,
                "domain.deleted",
                row["client_id"],
                {"domain_id": domain_id, "domain": row["name"]},
            )

    async def _emit(
        self, conn: Conn, event_type: str, client_id: str, data: dict[str, Any]
    ) -> None:
        """An event as a billing system posts it (SPEC §4), in the change's transaction."""
        await conn.execute(
            """
            INSERT INTO events (id, type, occurred_at, client_id, data)
            VALUES ($1, $2, clock_timestamp(), $3, $4)
            """,
            f"local-{uuid.uuid4()}",
            event_type,
            client_id,
            data,
        )

    def _invoice_data(self, invoice: Invoice) -> dict[str, Any]:
        return {
            "invoice_id": invoice.id,
            "total": str(invoice.total),
            "due_date": invoice.due.isoformat() if invoice.due else None,
            "service_id": invoice.service_id,
            "url": self._invoice_url(invoice.id),
        }

    # -- import and export ---------------------------------------------------------------
    async def load(self, data: Any) -> None:
        """Insert or update the records of an import (SPEC §4), by id, all or nothing.
        Raises ImportProblems naming every bad record and field; then nothing changed."""
        async with self.pool.acquire() as conn, conn.transaction():
            known = KnownIds(
                clients={r["id"] for r in await conn.fetch("SELECT id FROM billing_clients")},
                categories={r["id"] for r in await conn.fetch("SELECT id FROM billing_categories")},
                products={r["id"] for r in await conn.fetch("SELECT id FROM billing_products")},
                services={r["id"] for r in await conn.fetch("SELECT id FROM billing_services")},
            )
            problems = validate(data, known)
            if problems:
                raise ImportProblems(problems)
            await _write(conn, data, self.default_region)

    async def export(self) -> dict[str, Any]:
        """The current data in the import format, plus what the bot created."""
        async with self.pool.acquire() as conn:
            return await _export(conn)

    async def clients(self) -> list[dict[str, Any]]:
        """Every client with phone, for the sandbox's customer picker."""
        rows = await self.pool.fetch(
            "SELECT id, name, email, phone, phone_key FROM billing_clients ORDER BY name"
        )
        return [dict(r) for r in rows]


async def _write(conn: Conn, data: dict[str, Any], region: str) -> None:
    for c in data.get("clients", []):
        await conn.execute(
            """
            INSERT INTO billing_clients (id, name, email, phone, phone_key, verified,
                                         account_manager)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (id) DO UPDATE SET name = $2, email = $3, phone = $4, phone_key = $5,
                verified = $6, account_manager = $7, updated_at = now()
            """,
            c["id"],
            c["name"],
            c["email"],
            c.get("phone") or "",
            phone_key(c.get("phone") or "", region),
            bool(c.get("verified", False)),
            c.get("account_manager"),
        )
    for cat in data.get("categories", []):
        await conn.execute(
            "INSERT INTO billing_categories (id, name) VALUES ($1, $2) "
            "ON CONFLICT (id) DO UPDATE SET name = $2",
            cat["id"],
            cat["name"],
        )
    products = data.get("products", [])
    for p in products:
        await conn.execute(
            "INSERT INTO billing_products (id, category_id, name) VALUES ($1, $2, $3) "
            "ON CONFLICT (id) DO UPDATE SET category_id = $2, name = $3",
            p["id"],
            p["category"],
            p["name"],
        )
        await conn.execute("DELETE FROM billing_product_prices WHERE product_id = $1", p["id"])
        await conn.executemany(
            "INSERT INTO billing_product_prices (product_id, cycle, amount) VALUES ($1, $2, $3)",
            [(p["id"], cycle, Decimal(amount)) for cycle, amount in p["prices"].items()],
        )
    for p in products:
        await conn.execute("DELETE FROM billing_product_upgrades WHERE product_id = $1", p["id"])
        await conn.executemany(
            "INSERT INTO billing_product_upgrades (product_id, target_id) VALUES ($1, $2)",
            [(p["id"], target) for target in p.get("upgrades_to", [])],
        )
    for s in data.get("services", []):
        await conn.execute(
            """
            INSERT INTO billing_services (id, client_id, product_id, label, status,
                billing_cycle, amount, period_start, next_due, server)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (id) DO UPDATE SET client_id = $2, product_id = $3, label = $4,
                status = $5, billing_cycle = $6, amount = $7, period_start = $8,
                next_due = $9, server = $10, updated_at = now()
            """,
            s["id"],
            s["client"],
            s["product"],
            s["label"],
            s["status"],
            s["billing_cycle"],
            Decimal(s["amount"]),
            _date(s.get("period_start")),
            _date(s.get("next_due")),
            s.get("server"),
        )
    for i in data.get("invoices", []):
        await conn.execute(
            """
            INSERT INTO billing_invoices (id, client_id, service_id, total, status, due)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (id) DO UPDATE SET client_id = $2, service_id = $3, total = $4,
                status = $5, due = $6
            """,
            i["id"],
            i["client"],
            i.get("service"),
            Decimal(i["total"]),
            i["status"],
            _date(i.get("due")),
        )
    for d in data.get("domains", []):
        await conn.execute(
            """
            INSERT INTO billing_domains (id, client_id, name, status, auto_renew, next_due)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (id) DO UPDATE SET client_id = $2, name = $3, status = $4,
                auto_renew = $5, next_due = $6
            """,
            d["id"],
            d["client"],
            d["name"],
            d["status"],
            bool(d.get("auto_renew", True)),
            _date(d.get("next_due")),
        )
    for r in data.get("cancellation_requests", []):
        await conn.execute(
            """
            INSERT INTO billing_cancellation_requests (id, service_id, type, reason, requested_at)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (id) DO UPDATE SET service_id = $2, type = $3, reason = $4,
                requested_at = $5
            """,
            r["id"],
            r["service"],
            r["type"],
            r["reason"],
            _aware(r["requested_at"]),
        )
    for q in data.get("quotes", []):
        await conn.execute(
            """
            INSERT INTO billing_quotes (id, client_id, subject, total, valid_until)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (id) DO UPDATE SET client_id = $2, subject = $3, total = $4,
                valid_until = $5
            """,
            q["id"],
            q["client"],
            q.get("subject") or "",
            Decimal(q["total"]),
            _date(q.get("valid_until")),
        )


async def _export(conn: Conn) -> dict[str, Any]:
    out: dict[str, Any] = {name: [] for name in SECTIONS}
    for r in await conn.fetch(
        "SELECT id, name, email, phone, verified, account_manager FROM billing_clients ORDER BY id"
    ):
        client = {
            "id": r["id"],
            "name": r["name"],
            "email": r["email"],
            "phone": r["phone"],
            "verified": r["verified"],
        }
        if r["account_manager"] is not None:
            client["account_manager"] = r["account_manager"]
        out["clients"].append(client)
    for r in await conn.fetch("SELECT id, name FROM billing_categories ORDER BY id"):
        out["categories"].append({"id": r["id"], "name": r["name"]})
    prices: dict[str, dict[str, str]] = {}
    for r in await conn.fetch("SELECT product_id, cycle, amount FROM billing_product_prices"):
        prices.setdefault(r["product_id"], {})[r["cycle"]] = _money(r["amount"])
    upgrades: dict[str, list[str]] = {}
    for r in await conn.fetch(
        "SELECT product_id, target_id FROM billing_product_upgrades ORDER BY target_id"
    ):
        upgrades.setdefault(r["product_id"], []).append(r["target_id"])
    for r in await conn.fetch("SELECT id, category_id, name FROM billing_products ORDER BY id"):
        out["products"].append(
            {
                "id": r["id"],
                "category": r["category_id"],
                "name": r["name"],
                "prices": prices.get(r["id"], {}),
                "upgrades_to": upgrades.get(r["id"], []),
            }
        )
    for r in await conn.fetch(
        "SELECT id, client_id, product_id, label, status, billing_cycle, amount, period_start, "
        "next_due, server FROM billing_services ORDER BY id"
    ):
        out["services"].append(
            {
                "id": r["id"],
                "client": r["client_id"],
                "product": r["product_id"],
                "label": r["label"],
                "status": r["status"],
                "billing_cycle": r["billing_cycle"],
                "amount": _money(r["amount"]),
                "period_start": _iso(r["period_start"]),
                "next_due": _iso(r["next_due"]),
                **({"server": r["server"]} if r["server"] else {}),
            }
        )
    for r in await conn.fetch(
        "SELECT id, client_id, service_id, total, status, due FROM billing_invoices ORDER BY id"
    ):
        out["invoices"].append(
            {
                "id": r["id"],
                "client": r["client_id"],
                "service": r["service_id"],
                "total": _money(r["total"]),
                "status": r["status"],
                "due": _iso(r["due"]),
            }
        )
    for r in await conn.fetch(
        "SELECT id, client_id, name, status, auto_renew, next_due FROM billing_domains ORDER BY id"
    ):
        out["domains"].append(
            {
                "id": r["id"],
                "client": r["client_id"],
                "name": r["name"],
                "status": r["status"],
                "auto_renew": r["auto_renew"],
                "next_due": _iso(r["next_due"]),
            }
        )
    for r in await conn.fetch(
        "SELECT id, service_id, type, reason, requested_at FROM billing_cancellation_requests "
        "ORDER BY id"
    ):
        out["cancellation_requests"].append(
            {
                "id": r["id"],
                "service": r["service_id"],
                "type": r["type"],
                "reason": r["reason"],
                "requested_at": r["requested_at"].isoformat(),
            }
        )
    for r in await conn.fetch(
        "SELECT id, client_id, subject, total, valid_until FROM billing_quotes ORDER BY id"
    ):
        out["quotes"].append(
            {
                "id": r["id"],
                "client": r["client_id"],
                "subject": r["subject"],
                "total": _money(r["total"]),
                "valid_until": _iso(r["valid_until"]),
            }
        )
    return out


# -- rows to records ------------------------------------------------------------------------


def _client(row: asyncpg.Record) -> Client:
    return Client(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        verified=row["verified"],
        account_manager=row["account_manager"],
        phone=row["phone"],
    )


def _service(row: asyncpg.Record) -> Service:
    return Service(
        id=row["id"],
        client_id=row["client_id"],
        product_id=row["product_id"],
        product_name=row["product_name"],
        label=row["label"],
        status=row["status"],
        billing_cycle=row["billing_cycle"],
        amount=Decimal(row["amount"]),
        next_due=row["next_due"],
        period_start=row["period_start"],
        category_id=row["category_id"],
    )


def _invoice(row: asyncpg.Record) -> Invoice:
    return Invoice(
        id=row["id"],
        client_id=row["client_id"],
        service_id=row["service_id"],
        total=Decimal(row["total"]),
        status=row["status"],
        due=row["due"],
    )


def _replace_status(invoice: Invoice, status: str) -> Invoice:
    return replace(invoice, status=status)


def _domain(row: asyncpg.Record) -> Domain:
    return Domain(
        id=row["id"],
        client_id=row["client_id"],
        name=row["name"],
        status=row["status"],
        auto_renew=row["auto_renew"],
        next_due=row["next_due"],
    )


def _product(row: asyncpg.Record) -> Product:
    return Product(
        id=row["id"],
        category_id=row["category_id"],
        name=row["name"],
        prices={cycle: Decimal(amount) for cycle, amount in row["prices"].items()},
    )


def _cancellation(row: asyncpg.Record) -> CancellationRequest:
    return CancellationRequest(
        id=row["id"],
        service_id=row["service_id"],
        kind=CancellationKind(row["type"]),
        reason=row["reason"],
        requested_at=row["requested_at"],
    )


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _money(value: Decimal) -> str:
    return str(Decimal(value).quantize(Decimal("0.01")))
