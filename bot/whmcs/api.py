"""WHMCS's HTTP API, `POST <WHMCS_URL>/includes/api.php` (form-encoded,
`responsetype=json`): sending an action, telling WHMCS's errors apart (our
misconfiguration, a record that does not exist, a refusal), and reading list answers.

Whether an action may be sent again is the caller's to say: `call` tries once more when
the connection failed or dropped; `post` never does and raises `NotSent` or `NoAnswer`,
so that a write can be recorded as not made or as unknown."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, NoReturn

import aiohttp

from bot import metrics
from bot.whmcs.values import as_text, count
from flows.billing import (
    ALREADY_REQUESTED,
    CYCLE_NOT_SOLD,
    NOT_FOUND,
    NOT_OFFERED,
    UPGRADE_PENDING,
    BillingRefused,
    BillingUnavailable,
)

log = logging.getLogger(__name__)

# The API actions this adapter calls: the WHMCS API role needs exactly these.
ACTIONS = (
    "GetClients",
    "GetClientsDetails",
    "GetClientsProducts",
    "GetProducts",
    "GetInvoices",
    "GetInvoice",
    "GetQuotes",
    "GetPaymentMethods",
    "GetOrders",
    "UpgradeProduct",
    "UpdateInvoice",
    "AddCancelRequest",
    "GetCancelledPackages",
    "GetClientsDomains",
    "UpdateClientDomain",
)

# Reasons of BillingRefused specific to WHMCS (the flows treat unknown reasons as "a
# person will look at it").
WHMCS_ERROR = "whmcs_error"  # WHMCS said no for a reason we do not map; see `detail`

PAGE = 100
DETAIL_CONCURRENCY = 4  # parallel GetClientsDetails / GetInvoice calls

# Errors that mean our credentials, API role, IP allow-list or URL are wrong: our
# misconfiguration, not the customer's request.
_AUTH_ERRORS = (
    "authentication failed",
    "invalid or missing credentials",
    "invalid ip",
    "invalid permissions",
    "invalid access key",
    "ip banned",
    "access denied",
    "invalid api action",
    "administrator account disabled",
)
_NOT_FOUND_ERRORS = (
    "client not found",
    "client id not found",
    "service id not found",
    "invoice id not found",
    "domain id not found",
)
_REFUSALS = (
    ("previous upgrade invoice for service is still unpaid", UPGRADE_PENDING),
    ("existing cancellation request exists", ALREADY_REQUESTED),
    ("invalid billing cycle requested", CYCLE_NOT_SOLD),
    ("invalid new product id", NOT_OFFERED),
)
_CREDENTIALS = frozenset({"identifier", "secret", "accesskey"})


class NotSent(Exception):
    """The request never reached WHMCS (connection refused, DNS, connect timeout)."""


class NoAnswer(Exception):
    """The request left but no usable answer came back: WHMCS may have acted."""

    def __init__(self, reason: str, *, connection_lost: bool = False) -> None:
        super().__init__(reason)
        # A dropped connection (not a timeout): a read may be tried once more.
        self.connection_lost = connection_lost


class WhmcsApi:
    """One WHMCS installation's API over one HTTP session, opened by the first request:
    `close()` it at shutdown."""

    def __init__(
        self,
        base_url: str,
        *,
        identifier: str,
        secret: str,
        access_key: str,
        timeout_seconds: float,
    ) -> None:
        self._api_url = f"{base_url}/includes/api.php"
        self._credentials = {"identifier": identifier, "secret": secret}
        if access_key:
            self._credentials["accesskey"] = access_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def pages(
        self, action: str, params: Mapping[str, Any], outer: str, inner: str
    ) -> list[dict[str, Any]]:
        """Every row of a paged list action (limitstart / limitnum)."""
        found: list[dict[str, Any]] = []
        while True:
            body = await self.call(action, {**params, "limitstart": len(found), "limitnum": PAGE})
            page = rows(body, outer, inner)
            found += page
            total = count(body.get("totalresults"), default=len(found))
            if not page or len(found) >= total:
                return found

    async def call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """A read, or a write that is harmless to repeat: tried once more when the
        connection failed or dropped; any other failure is BillingUnavailable."""
        try:
            return await self.post(action, params)
        except (NotSent, NoAnswer) as e:
            if isinstance(e, NoAnswer) and not e.connection_lost:
                log.warning("WHMCS %s failed: %s", action, e)
                raise BillingUnavailable(f"WHMCS {action}: {e}") from None
            log.info("WHMCS %s: %s; trying once more", action, e)
        try:
            return await self.post(action, params)
        except (NotSent, NoAnswer) as e:
            log.warning("WHMCS %s failed again: %s", action, e)
            raise BillingUnavailable(f"WHMCS {action}: {e}") from None

    async def post(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One request, never repeated. WHMCS's errors are raised as BillingRefused or
        BillingUnavailable; NotSent and NoAnswer say whether WHMCS may have acted."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        form = {
            **{k: str(v) for k, v in params.items()},
            **self._credentials,
            "action": action,
            "responsetype": "json",
        }
        log.debug("WHMCS %s %s", action, loggable(params))
        try:
            async with self._session.post(self._api_url, data=form) as response:
                status = response.status
                text = await response.text(errors="replace")
        except aiohttp.ConnectionTimeoutError:
            raise NotSent("no connection within the timeout") from None
        except TimeoutError:
            raise NoAnswer(f"no answer within {self._timeout.total} s") from None
        except aiohttp.ClientConnectorError as e:
            raise NotSent(f"cannot connect ({e.os_error.strerror or e.os_error})") from None
        except aiohttp.ClientError as e:
            raise NoAnswer(f"connection lost ({type(e).__name__})", connection_lost=True) from None
        body = _json_object(text)
        if body is not None and "error" in (body.get("result"), body.get("status")):
            message = as_text(body.get("message"))
            if status == 403:
                # WHMCS answers whatever stops it from serving the API at all — wrong
                # credentials, an IP not allowed or banned after failed logins, a role
                # without the action, a disabled admin — with 403, whatever the words.
                self._misconfigured(action, message)
            self._refuse(action, message)
        if status >= 400 or body is None or body.get("result") != "success":
            # An HTML error page (WHMCS answers PHP fatal errors that way), a proxy's
            # page, or output that is not the JSON asked for.
            log.warning(
                "WHMCS %s: HTTP %s, unusable answer: %r", action, status, self._scrub(text)[:200]
            )
            raise NoAnswer(f"HTTP {status}, unusable answer")
        return body

    def _scrub(self, text: str) -> str:
        """`text` without our credentials, should WHMCS ever echo them back."""
        for value in self._credentials.values():
            text = text.replace(value, "***")
        return text

    def _misconfigured(self, action: str, message: str) -> NoReturn:
        """Our setup, not the customer's request: billing is unavailable (never a refusal
        told to a customer) and an operator is alerted."""
        message = self._scrub(message)
        metrics.BILLING_CONFIGURATION_ERRORS.labels(action=action).inc()
        log.error(
            "WHMCS refused %s: %r. Check WHMCS_URL, WHMCS_IDENTIFIER, WHMCS_SECRET, "
            "WHMCS_ACCESS_KEY, the API role's actions, the IP allow-list and whether the "
            "bot's admin user is active",
            action,
            message,
        )
        raise BillingUnavailable(f"WHMCS {action}: {message}")

    def _refuse(self, action: str, message: str) -> NoReturn:
        lowered = message.lower()
        # A licence problem ("License Checking Error", "Licence expired") stops every
        # call of the installation: ours to fix, never the customer's refusal.
        if lowered.startswith(_AUTH_ERRORS) or "license" in lowered or "licence" in lowered:
            self._misconfigured(action, message)
        message = self._scrub(message)
        if lowered in _NOT_FOUND_ERRORS:
            raise BillingRefused(NOT_FOUND, message)
        for fragment, reason in _REFUSALS:
            if fragment in lowered:
                raise BillingRefused(reason, message)
        log.warning("WHMCS %s refused: %r", action, message)
        raise BillingRefused(WHMCS_ERROR, message)


def rows(body: Mapping[str, Any], outer: str, inner: str) -> list[dict[str, Any]]:
    """The records of a list answer: `{outer: {inner: [...]}}`, where WHMCS sends `""`
    or `[]` or nothing for none, and a single record unwrapped in some versions."""
    wrapper = body.get(outer)
    found = wrapper.get(inner) if isinstance(wrapper, dict) else None
    if isinstance(found, dict):
        return [found]
    if isinstance(found, list):
        return [r for r in found if isinstance(r, dict)]
    return []


def loggable(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in params.items() if k not in _CREDENTIALS}


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
