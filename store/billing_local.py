"""The local billing backend: clients, products and services in our own PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from flows.billing import Client, ClientLookup, Found, Service
from flows.phones import phone_key, wa_id_key


class LocalBilling:
    def __init__(self, pool: asyncpg.Pool, *, default_region: str = "AR") -> None:
        self.pool = pool
        self.default_region = default_region

    async def find_client_by_phone(self, wa_id: str) -> ClientLookup:
        key = wa_id_key(wa_id)
        if key is None:
            return ClientLookup(Found.NONE)
        rows = await self.pool.fetch(
            """
            SELECT id, name, email, verified, account_manager FROM billing_clients
            WHERE phone_key = $1 ORDER BY id LIMIT 2
            """,
            key,
        )
        if not rows:
            return ClientLookup(Found.NONE)
        if len(rows) > 1:
            return ClientLookup(Found.SEVERAL)
        return ClientLookup(Found.ONE, _client(rows[0]))

    async def get_client(self, client_id: str) -> Client | None:
        row = await self.pool.fetchrow(
            "SELECT id, name, email, verified, account_manager FROM billing_clients WHERE id = $1",
            client_id,
        )
        return _client(row) if row else None

    async def list_services(self, client_id: str) -> list[Service]:
        rows = await self.pool.fetch(
            """
            SELECT s.id, s.client_id, s.product_id, p.name AS product_name, s.label, s.status,
                   s.billing_cycle, s.amount, s.next_due
            FROM billing_services s JOIN billing_products p ON p.id = s.product_id
            WHERE s.client_id = $1 ORDER BY s.id
            """,
            client_id,
        )
        return [
            Service(
                id=r["id"],
                client_id=r["client_id"],
                product_id=r["product_id"],
                product_name=r["product_name"],
                label=r["label"],
                status=r["status"],
                billing_cycle=r["billing_cycle"],
                amount=Decimal(r["amount"]),
                next_due=r["next_due"],
            )
            for r in rows
        ]

    async def load(self, data: dict[str, Any]) -> None:
        """Insert or update the records of an import (SPEC §4), by id, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            for c in data.get("clients", []):
                await conn.execute(
                    """
                    INSERT INTO billing_clients
                        (id, name, email, phone, phone_key, verified, account_manager)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    ON CONFLICT (id) DO UPDATE SET name = $2, email = $3, phone = $4,
                        phone_key = $5, verified = $6, account_manager = $7, updated_at = now()
                    """,
                    c["id"],
                    c["name"],
                    c["email"],
                    c.get("phone", ""),
                    phone_key(c.get("phone", ""), self.default_region),
                    bool(c.get("verified", False)),
                    c.get("account_manager"),
                )
            for cat in data.get("categories", []):
                await conn.execute(
                    """
                    INSERT INTO billing_categories (id, name) VALUES ($1, $2)
                    ON CONFLICT (id) DO UPDATE SET name = $2
                    """,
                    cat["id"],
                    cat["name"],
                )
            products = data.get("products", [])
            for p in products:
                await conn.execute(
                    """
                    INSERT INTO billing_products (id, category_id, name) VALUES ($1, $2, $3)
                    ON CONFLICT (id) DO UPDATE SET category_id = $2, name = $3
                    """,
                    p["id"],
                    p["category"],
                    p["name"],
                )
                await conn.execute(
                    "DELETE FROM billing_product_prices WHERE product_id = $1", p["id"]
                )
                for cycle, amount in p.get("prices", {}).items():
                    await conn.execute(
                        """
                        INSERT INTO billing_product_prices (product_id, cycle, amount)
                        VALUES ($1, $2, $3)
                        """,
                        p["id"],
                        cycle,
                        Decimal(amount),
                    )
            for p in products:
                await conn.execute(
                    "DELETE FROM billing_product_upgrades WHERE product_id = $1", p["id"]
                )
                for target in p.get("upgrades_to", []):
                    await conn.execute(
                        """
                        INSERT INTO billing_product_upgrades (product_id, target_id)
                        VALUES ($1, $2)
                        """,
                        p["id"],
                        target,
                    )
            for s in data.get("services", []):
                await conn.execute(
                    """
                    INSERT INTO billing_services (id, client_id, product_id, label, status,
                        billing_cycle, amount, period_start, next_due)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    ON CONFLICT (id) DO UPDATE SET client_id = $2, product_id = $3, label = $4,
                        status = $5, billing_cycle = $6, amount = $7, period_start = $8,
                        next_due = $9, updated_at = now()
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

    async def clients(self) -> list[dict[str, Any]]:
        """Every client with phone, for the sandbox's customer picker."""
        rows = await self.pool.fetch(
            "SELECT id, name, email, phone, phone_key FROM billing_clients ORDER BY name"
        )
        return [dict(r) for r in rows]


def _client(row: asyncpg.Record) -> Client:
    return Client(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        verified=row["verified"],
        account_manager=row["account_manager"],
    )


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None
