"""Writes at most once per request id. WHMCS has no idempotency key, so UpgradeProduct
and AddCancelRequest are recorded in `whmcs_requests` (`store/whmcs_index.py`) before
they are sent, are never sent twice for one request id, and a repeat of the request gets
the result recorded the first time, kept as JSON.

The upgrades recorded there are also the bot's own account of what it ordered: which
service and package an upgrade invoice is for (WHMCS's invoice line does not say), and
which of them expiring has dealt with."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from bot.whmcs.api import NoAnswer, NotSent, WhmcsApi, loggable
from flows.billing import (
    ALREADY_REQUESTED,
    CYCLE_NOT_SOLD,
    NOT_FOUND,
    NOT_OFFERED,
    UPGRADE_PENDING,
    BillingRefused,
    BillingUnavailable,
    CancellationKind,
    CancellationRequest,
    Invoice,
    OutcomeUnknown,
    PlacedUpgrade,
    Product,
)
from flows.pricing import Policy, UpgradeQuote
from store import whmcs_index as index

log = logging.getLogger(__name__)

# What WHMCS now has after a write answered an error: the answer to go on with, or None.
Look = Callable[[], Awaitable[dict[str, Any] | None]]
# Refusals WHMCS makes before it writes anything: no need to look.
NOTHING_WRITTEN = frozenset(
    {ALREADY_REQUESTED, UPGRADE_PENDING, CYCLE_NOT_SOLD, NOT_OFFERED, NOT_FOUND}
)


class RequestLedger:
    """The `whmcs_requests` log, and the one way to send a write that must not happen
    twice."""

    def __init__(self, pool: asyncpg.Pool, api: WhmcsApi) -> None:
        self._pool = pool
        self._api = api

    async def recorded(self, request_id: str, action: str) -> dict[str, Any] | None:
        """The result of this request made before, or None if it is new. OutcomeUnknown
        if it was made and whether WHMCS acted is not known."""
        record = await index.request_record(self._pool, request_id, action)
        return None if record is None else _recorded_result(record)

    async def claim(
        self, request_id: str, action: str, client_id: str, params: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Record the request before it is sent: None when it is ours to send, else the
        result of a twin of this request that got there first."""
        claimed = await index.claim_request(self._pool, request_id, action, client_id, params)
        return None if claimed is None else _recorded_result(claimed)

    async def send_once(
        self,
        request_id: str,
        action: str,
        params: Mapping[str, Any],
        *,
        look: Look,
    ) -> dict[str, Any]:
        """A write that must not happen twice, already claimed in `whmcs_requests`: sent
        once, never retried. A lost answer leaves it `unknown` and raises OutcomeUnknown;
        a failure certain to have written nothing releases the claim so that the request
        can be made again.

        An error answer is not certain: WHMCS writes first and can then fail (a hook, a
        module call) and answer `result: error`. So `look` checks what WHMCS now has: the
        answer to go on with if the write landed, None if it did not (the refusal
        stands); it raises OutcomeUnknown when it cannot tell."""
        try:
            return await self._api.post(action, params)
        except NotSent as e:
            await index.release_request(self._pool, request_id, action)
            log.warning("WHMCS %s not sent: %s", action, e)
            raise BillingUnavailable(f"WHMCS {action}: {e}") from None
        except BillingUnavailable:
            await index.release_request(self._pool, request_id, action)
            raise
        except BillingRefused as refused:
            landed = await self._look(request_id, action, params, refused, look)
            if landed is None:
                await index.release_request(self._pool, request_id, action)
                raise
            return landed
        except NoAnswer as e:
            await self._unknown(request_id, action, params, str(e))
            raise OutcomeUnknown(f"WHMCS {action}: {e}") from None

    async def _look(
        self,
        request_id: str,
        action: str,
        params: Mapping[str, Any],
        refused: BillingRefused,
        look: Look,
    ) -> dict[str, Any] | None:
        if refused.reason in NOTHING_WRITTEN:
            return None  # WHMCS checks these before writing anything
        try:
            landed = await look()
        except (BillingUnavailable, OutcomeUnknown) as e:
            await self._unknown(request_id, action, params, f"{refused}; then {e}")
            raise OutcomeUnknown(f"WHMCS {action}: {refused}; {e}") from None
        if landed is not None:
            log.warning(
                "WHMCS %s for request %s answered an error (%s) but had written it",
                action,
                request_id,
                refused,
            )
        return landed

    async def _unknown(
        self, request_id: str, action: str, params: Mapping[str, Any], why: str
    ) -> None:
        await index.mark_unknown(self._pool, request_id, action, why)
        log.error(
            "WHMCS %s for request %s (%s): %s; whether WHMCS acted is unknown, a person "
            "must check before it is tried again",
            action,
            request_id,
            loggable(params),
            why,
        )

    async def finish(self, request_id: str, action: str, result: dict[str, Any]) -> None:
        await index.finish_request(self._pool, request_id, action, result)

    async def upgrade_invoice_service(self, client_id: str, invoice_id: str) -> str | None:
        """The service an upgrade invoice bills: WHMCS's invoice line does not say, the
        UpgradeProduct we recorded does."""
        return await index.upgrade_invoice_service(self._pool, client_id, invoice_id)

    async def latest_upgrade(
        self, client_id: str, service_id: str
    ) -> index.PlacedUpgradeRecord | None:
        """The newest upgrade of the service the bot had WHMCS invoice and expiring has
        not dealt with (its invoice may be paid since: WHMCS says)."""
        return await index.latest_placed_upgrade(self._pool, client_id, service_id)

    async def upgrade_of_invoice(
        self, client_id: str, invoice_id: str
    ) -> index.PlacedUpgradeRecord | None:
        return await index.placed_upgrade_of_invoice(self._pool, client_id, invoice_id)

    async def claim_expiring(
        self, placed_before: datetime, *, lease: timedelta, limit: int
    ) -> list[index.PlacedUpgradeRecord]:
        return await index.claim_expiring_upgrades(
            self._pool, placed_before, lease=lease, limit=limit
        )

    async def expired(self, request_id: str, outcome: str) -> None:
        await index.finish_expiry(self._pool, request_id, outcome)

    async def release_expiring(self, request_ids: list[str]) -> None:
        await index.release_expiry(self._pool, request_ids)


def _recorded_result(record: index.RequestRecord) -> dict[str, Any]:
    if record.status == "done" and record.result is not None:
        return record.result
    raise OutcomeUnknown(
        f"{record.action} for request {record.request_id} is {record.status}: "
        "whether WHMCS acted is unknown, a person must check"
    )


def quote_json(quote: UpgradeQuote) -> dict[str, Any]:
    return {
        "amount": str(quote.amount),
        "policy": quote.policy.value,
        "cycle": quote.cycle,
        "new_recurring": str(quote.new_recurring),
        "next_due": quote.next_due.isoformat(),
        "days_left": quote.days_left,
        "days_in_cycle": quote.days_in_cycle,
    }


def product_json(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "category_id": product.category_id,
        "name": product.name,
        "prices": {cycle: str(price) for cycle, price in product.prices.items()},
    }


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "client_id": invoice.client_id,
        "service_id": invoice.service_id,
        "total": str(invoice.total),
        "status": invoice.status,
        "due": invoice.due.isoformat() if invoice.due else None,
    }


def placed_from(result: Mapping[str, Any]) -> PlacedUpgrade:
    q, p, i = result["quote"], result["product"], result.get("invoice")
    return PlacedUpgrade(
        quote=UpgradeQuote(
            amount=Decimal(q["amount"]),
            policy=Policy(q["policy"]),
            cycle=q["cycle"],
            new_recurring=Decimal(q["new_recurring"]),
            next_due=date.fromisoformat(q["next_due"]),
            days_left=q["days_left"],
            days_in_cycle=q["days_in_cycle"],
        ),
        product=Product(
            p["id"], p["category_id"], p["name"], {c: Decimal(v) for c, v in p["prices"].items()}
        ),
        invoice=None
        if i is None
        else Invoice(
            id=i["id"],
            client_id=i["client_id"],
            service_id=i["service_id"],
            total=Decimal(i["total"]),
            status=i["status"],
            due=date.fromisoformat(i["due"]) if i["due"] else None,
        ),
        invoice_url=result.get("invoice_url"),
    )


def cancellation_from(result: Mapping[str, Any]) -> CancellationRequest:
    return CancellationRequest(
        id=result["id"],
        service_id=result["service_id"],
        kind=CancellationKind(result["kind"]),
        reason=result["reason"],
        requested_at=datetime.fromisoformat(result["requested_at"]),
    )
