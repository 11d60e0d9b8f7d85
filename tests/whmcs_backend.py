"""The WHMCS backend over its fake API, loaded with the shared billing fixture."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from bot.fakes.whmcs import whmcs_backend as _whmcs_backend
from tests.billing_fixture import BILLING


def whmcs_backend(pool: asyncpg.Pool) -> AbstractAsyncContextManager[Any]:
    """Yields (make(policy), product_id(fixture_id)) for the contract suite."""
    return _whmcs_backend(pool, BILLING)
