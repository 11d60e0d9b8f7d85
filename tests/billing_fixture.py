"""Billing data for tests, in the import format of SPEC §4."""

from __future__ import annotations

from typing import Any

JUAN_WA = "5491155551234"  # Argentina: WhatsApp carries the 9 the account phone lacks
MARIA_WA = "5215512345678"  # Mexico: the old mobile 1 after 52
UNKNOWN_WA = "34600000000"
SHARED_WA = "5493515550000"  # the same phone on two accounts

BILLING: dict[str, Any] = {
    "clients": [
        {
            "id": "c1",
            "name": "Juan Perez",
            "email": "juan@example.com",
            "phone": "+54 11 5555-1234",
            "verified": True,
            "account_manager": "ana",
        },
        {
            "id": "c2",
            "name": "María González",
            "email": "maria@example.com",
            "phone": "+52 55 1234 5678",
            "verified": True,
            "account_manager": "ana",
        },
        {
            "id": "c3",
            "name": "Pedro Uno",
            "email": "pedro1@example.com",
            "phone": "+54 351 555-0000",
            "verified": True,
        },
        {
            "id": "c4",
            "name": "Pedro Dos",
            "email": "pedro2@example.com",
            "phone": "0351 15 555-0000",
            "verified": False,
        },
    ],
    "categories": [{"id": "hosting", "name": "Hosting"}, {"id": "vps", "name": "VPS"}],
    "products": [
        {
            "id": "p0",
            "category": "hosting",
            "name": "Hosting Mini",
            "prices": {"monthly": "5.00", "annually": "50.00"},
            "upgrades_to": ["p1"],
        },
        {
            "id": "p1",
            "category": "hosting",
            "name": "Hosting Inicial",
            "prices": {"monthly": "10.00", "annually": "100.00"},
            # p0 is cheaper: among the paths, yet a downgrade.
            "upgrades_to": ["p2", "p0", "v1"],
        },
        {
            "id": "p2",
            "category": "hosting",
            "name": "Hosting Pro",
            "prices": {"monthly": "15.00", "annually": "150.00"},
            "upgrades_to": [],
        },
        {
            "id": "p3",
            "category": "hosting",
            "name": "Hosting Ultra",
            "prices": {"monthly": "25.00", "annually": "250.00"},
            "upgrades_to": [],
        },
        {
            "id": "v1",
            "category": "vps",
            "name": "VPS Base",
            "prices": {"monthly": "25.00"},
            "upgrades_to": [],
        },
    ],
    "services": [
        {
            "id": "s1",
            "client": "c1",
            "product": "p1",
            "label": "juanperez.com.ar",
            "status": "active",
            "billing_cycle": "annually",
            "amount": "100.00",
            "period_start": "2026-01-01",
            "next_due": "2027-01-01",
        },
        {
            "id": "s2",
            "client": "c2",
            "product": "p1",
            "label": "mariagonzalez.mx",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "period_start": "2026-06-01",
            "next_due": "2026-07-01",
        },
        {
            "id": "s3",
            "client": "c1",
            "product": "p0",
            "label": "radio.juanperez.com.ar",
            "status": "suspended",
            "billing_cycle": "monthly",
            "amount": "5.00",
            "period_start": "2026-05-01",
            "next_due": "2026-06-01",
        },
    ],
    "invoices": [
        {
            "id": "i1",
            "client": "c1",
            "service": "s1",
            "total": "100.00",
            "status": "paid",
            "due": "2026-01-01",
        },
        {
            "id": "i2",
            "client": "c1",
            "service": "s3",
            "total": "5.00",
            "status": "unpaid",
            "due": "2026-06-01",
        },
    ],
    "domains": [
        {
            "id": "d1",
            "client": "c1",
            "name": "juanperez.com.ar",
            "status": "active",
            "auto_renew": True,
            "next_due": "2027-01-01",
        },
        {
            "id": "d2",
            "client": "c2",
            "name": "mariagonzalez.mx",
            "status": "active",
            "auto_renew": True,
            "next_due": "2027-03-01",
        },
    ],
}


def bulk_clients(n: int, *, start: int = 1000) -> dict[str, Any]:
    """`n` identified customers with Argentine mobiles, for load tests."""
    clients = []
    for i in range(start, start + n):
        clients.append(
            {
                "id": f"load{i}",
                "name": f"Cliente {i}",
                "email": f"c{i}@example.com",
                "phone": f"+54 11 4{i:07d}",
                "verified": True,
            }
        )
    return {"clients": clients}


def bulk_wa_id(i: int) -> str:
    return f"54911{4}{i:07d}"
