"""WHMCS's product catalog, for naming services' categories and pricing upgrades: one
GetProducts answer (every product, with its prices per currency and cycle) shared by
every request for a few minutes; and, kept the same way, the payment gateways that are
active (GetPaymentMethods)."""

from __future__ import annotations

import asyncio
import logging
import time

from bot.whmcs.api import WhmcsApi, rows
from bot.whmcs.mapping import CatalogProduct, catalog_product_from
from flows.billing import BillingUnavailable

log = logging.getLogger(__name__)

_CATALOG_TTL = 300.0  # seconds: prices and products change rarely


class Catalog:
    def __init__(self, api: WhmcsApi) -> None:
        self._api = api
        self._cache: tuple[float, dict[str, CatalogProduct]] | None = None
        self._gateways: tuple[float, frozenset[str]] | None = None
        self._lock = asyncio.Lock()

    async def products(self) -> dict[str, CatalogProduct]:
        """Every product with its prices (GetProducts), kept a few minutes."""
        async with self._lock:
            now = time.monotonic()
            if self._cache is not None and now - self._cache[0] < _CATALOG_TTL:
                return self._cache[1]
            body = await self._api.call("GetProducts", {})
            catalog = {
                p.pid: p for p in map(catalog_product_from, rows(body, "products", "product"))
            }
            self._cache = (now, catalog)
            return catalog

    async def products_or_empty(self) -> dict[str, CatalogProduct]:
        """The catalog for a listing that can do without categories."""
        try:
            return await self.products()
        except BillingUnavailable as e:
            log.warning("WHMCS products unavailable, services listed without categories: %s", e)
            return {}

    async def active_gateways(self) -> frozenset[str]:
        """The payment gateways WHMCS has active (their module names), kept a few
        minutes: an order billed through a disabled one is refused when placed."""
        async with self._lock:
            now = time.monotonic()
            if self._gateways is not None and now - self._gateways[0] < _CATALOG_TTL:
                return self._gateways[1]
            body = await self._api.call("GetPaymentMethods", {})
            found = frozenset(
                str(r.get("module")) for r in rows(body, "paymentmethods", "paymentmethod")
            )
            self._gateways = (now, found)
            return found
