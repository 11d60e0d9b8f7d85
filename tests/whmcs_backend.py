"""The WHMCS backend over its fake API, loaded with the shared billing fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from bot.config import Settings
from bot.fakes.whmcs import FakeWhmcs
from bot.fakes.whmcs import whmcs_backend as _whmcs_backend
from bot.whmcs import WhmcsBilling
from tests.billing_fixture import BILLING

Make = Callable[..., Awaitable[WhmcsBilling]]


@asynccontextmanager
async def billings(pool: asyncpg.Pool, fake: FakeWhmcs, tmp_path: Path) -> AsyncIterator[Make]:
    """make(**changes): a WhmcsBilling pointed at the fake (`changes` alter its settings),
    each closed at the end."""
    made: list[WhmcsBilling] = []

    async def build(**changes: Any) -> WhmcsBilling:
        settings = fake.settings_for(Settings(), tmp_path / "whmcs_upgrades.toml")
        settings = settings.with_(**{"whmcs_timeout_seconds": 2.0, **changes})
        billing = WhmcsBilling(settings, pool)
        made.append(billing)
        return billing

    try:
        yield build
    finally:
        for billing in made:
            await billing.close()


def whmcs_backend(pool: asyncpg.Pool) -> AbstractAsyncContextManager[Any]:
    """Yields (make(policy), product_id(fixture_id)) for the contract suite."""
    return _whmcs_backend(pool, BILLING)
