"""A fake of Meta's WhatsApp Cloud API: a real aiohttp server on loopback.

Tests, the sandbox and the benchmarks point the WhatsApp client at it instead of
`graph.facebook.com`. It answers `POST /{version}/{phone_id}/messages` the way the Graph
API does (same success and error bodies, same HTTP statuses, Meta's message limits
enforced), records every accepted send, and plays Meta's side of the webhooks: signed
status updates (sent < delivered < read) delivered at least once with retries, and
customer messages posted on demand.

Like Meta it knows which templates exist: by default the alerts' templates of
`messages_es/alerts.toml` (`bot.templates`), in Spanish, with the parameter counts Meta
will expect once they are approved. A template send with another name or language fails
with 132001, with other counts 132000, and one paused (`paused_templates`) 132015.

Failures can be injected from Python or over HTTP (`POST /_fake/failures`), so a
benchmark running the fake in another process (`python -m bot.fakes.cloud_api`) can
configure it too. Routes under `/_fake/` are the fake's own, not Meta's.

Kept cheap per request (the benchmark pushes 1–2k sends/s through it): no per-request
logging, compact stdlib JSON, one shared client session for webhooks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import random
import re
import secrets
import signal
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from bot.fakes import payloads as wa_payloads
from bot.fakes.payloads import InboundItem, JSONDict
from bot.serving import serve
from bot.templates import param_counts
from flows.catalog import default_catalog

log = logging.getLogger(__name__)

MESSAGE_TYPES = frozenset(
    {
        "text",
        "interactive",
        "template",
        "image",
        "document",
        "audio",
        "video",
        "sticker",
        "location",
        "contacts",
        "reaction",
    }
)
_MEDIA_TYPES = frozenset({"image", "document", "audio", "video", "sticker"})
_INTERACTIVE_TYPES = frozenset(
    {
        "button",
        "list",
        "cta_url",
        "flow",
        "product",
        "product_list",
        "catalog_message",
        "location_request_message",
        "call_permission_request",
        "address_message",
        "voice_call",
        "carousel",
    }
)
# A bare proxy error page: no JSON at all, as a load balancer in front of Graph answers.
HTML_ERROR_CODES = frozenset({500, 502, 503, 504})
_HTML_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# The one language the templates are approved in.
TEMPLATE_LANGUAGE = "es"

_STATUS_BACKOFF_START = 0.2
_STATUS_BACKOFF_CAP = 5.0
_WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=10)

_dumps: Callable[[Any], str] = functools.partial(
    json.dumps, ensure_ascii=False, separators=(",", ":")
)


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A send the fake accepted (answered with a wamid)."""

    seq: int
    wamid: str
    to: str
    type: str
    body: JSONDict
    biz_opaque_callback_data: str | None
    received_at: datetime

    def to_json(self) -> JSONDict:
        return {
            "seq": self.seq,
            "wamid": self.wamid,
            "to": self.to,
            "type": self.type,
            "body": self.body,
            "biz_opaque_callback_data": self.biz_opaque_callback_data,
            "received_at": self.received_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class FailedSend:
    """A send the fake refused: invalid, unauthorised or failed on purpose."""

    seq: int
    to: str | None
    type: str | None
    body: JSONDict
    code: int
    http_status: int
    received_at: datetime


@dataclass(slots=True)
class _ForcedFailure:
    code: int
    remaining: int
    to: str | None


@dataclass(frozen=True, slots=True)
class Awkward:
    """Meta's habits, each happening to a share of the messages (drawn from the fake's
    seeded generator): what the bot must take in its stride.

    - `skip_delivered`: a message's `delivered` never comes (its `read` does);
    - `repeat`: one of its statuses is posted twice (at-least-once delivery);
    - `out_of_order`: `read` comes before `delivered`;
    - `failed_after_sent`: `sent`, then `failed` (131026, undeliverable), then nothing;
    - `gateway_timeout`: the send is accepted (recorded, statuses on their way) and then
      answered with a 504 page: the sender cannot know it went.
    """

    skip_delivered: float = 0.0
    repeat: float = 0.0
    out_of_order: float = 0.0
    failed_after_sent: float = 0.0
    gateway_timeout: float = 0.0

    @classmethod
    def everything(cls, rate: float = 0.15) -> Awkward:
        return cls(rate, rate, rate, rate / 3, rate)


@dataclass(frozen=True, slots=True)
class _StatusJob:
    """The statuses still to post for one accepted send, the next one due at `due`."""

    wamid: str
    recipient_id: str | None
    recipient_user_id: str | None
    biz_opaque_callback_data: str | None
    category: str
    remaining: tuple[str, ...]
    due: float


class _Rejected(Exception):
    """A send Meta would refuse; carries the Meta error code and its details."""

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def http_status_for(code: int) -> int:
    """The HTTP status the Graph API answers a send failing with `code`."""
    if code in HTML_ERROR_CODES:
        return code
    if code == 190:
        return 401
    return wa_payloads.meta_error(code).http_status


def graph_error_body(code: int, details: str | None = None) -> JSONDict:
    """The Graph API error body for `code`, in Meta's shape."""
    error = wa_payloads.meta_error(code)
    body: JSONDict = {
        "message": f"(#{code}) {error.title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details or error.details},
    }
    if error.subcode is not None:
        body["error_subcode"] = error.subcode
    body["fbtrace_id"] = _fbtrace_id()
    return {"error": body}


def _fbtrace_id() -> str:
    return secrets.token_urlsafe(17)


def _oauth_error() -> web.Response:
    body = {
        "error": {
            "message": "Invalid OAuth access token - Cannot parse access token",
            "type": "OAuthException",
            "code": 190,
            "fbtrace_id": _fbtrace_id(),
        }
    }
    return web.json_response(
        body,
        status=401,
        dumps=_dumps,
        headers={"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'},
    )


def _unknown_object(phone_id: str) -> web.Response:
    body = {
        "error": {
            "message": (
                f"Unsupported post request. Object with ID '{phone_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this "
                "operation. Please read the Graph API documentation at "
                "https://developers.facebook.com/docs/graph-api"
            ),
            "type": "GraphMethodException",
            "code": 100,
            "error_subcode": 33,
            "fbtrace_id": _fbtrace_id(),
        }
    }
    return web.json_response(body, status=400, dumps=_dumps)


def _error_response(code: int, details: str | None = None) -> web.Response:
    if code in HTML_ERROR_CODES:
        reason = _HTML_REASONS[code]
        html = (
            f"<html><head><title>{code} {reason}</title></head>"
            f"<body><center><h1>{code} {reason}</h1></center></body></html>"
        )
        return web.Response(status=code, text=html, content_type="text/html")
    return web.json_response(
        graph_error_body(code, details), status=http_status_for(code), dumps=_dumps
    )


# --- validation of a send against Meta's rules ---------------------------------------


def _invalid(details: str) -> _Rejected:
    return _Rejected(131009, details)


def _missing(param: str) -> _Rejected:
    return _Rejected(100, f"The parameter {param} is required.")


def _check_length(value: Any, param: str, max_len: int, *, min_len: int = 1) -> None:
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise _invalid(f"{param} length invalid. Min length: {min_len}, Max length: {max_len}")


def _object(body: JSONDict, key: str, param: str) -> JSONDict:
    value = body.get(key)
    if not isinstance(value, dict):
        raise _missing(param)
    return value


_PHONE = re.compile(r"\+?[0-9 ()-]{5,20}")


def _validate(body: JSONDict) -> tuple[str, str]:
    """The recipient and type of a valid send; raises `_Rejected` like Meta otherwise."""
    if body.get("messaging_product") != "whatsapp":
        raise _missing("messaging_product")
    to = body.get("to")
    recipient = body.get("recipient")
    target = to if to is not None else recipient
    if not isinstance(target, str) or not target:
        raise _missing("to")
    # A user is addressed by phone (`to`) or by business-scoped user id (`recipient`, an
    # opaque string); recipient_type "group" means `to` is a group id, and this number
    # has no groups.
    recipient_type = body.get("recipient_type", "individual")
    if recipient_type == "group":
        raise _Rejected(100, f"Invalid parameter: no group with id {target!r}")
    if recipient_type != "individual":
        raise _Rejected(100, "Param recipient_type must be one of {group, individual}")
    if to is not None and not _PHONE.fullmatch(str(to)):
        raise _Rejected(100, "Param to must be a phone number; use recipient for a user id")
    type_ = body.get("type", "text")  # Meta defaults a missing type to text
    if type_ not in MESSAGE_TYPES:
        raise _Rejected(100, f"Param type must be one of {{{', '.join(sorted(MESSAGE_TYPES))}}}")
    tracker = body.get("biz_opaque_callback_data")
    if tracker is not None and (not isinstance(tracker, str) or len(tracker) > 512):
        raise _Rejected(100, "Param biz_opaque_callback_data must be at most 512 characters long.")
    if type_ == "contacts":
        if not isinstance(body.get("contacts"), list) or not body["contacts"]:
            raise _missing("contacts")
    else:
        content = _object(body, type_, f"{type_}")
        _CHECKS[type_](content)
    return target, type_


def _check_text(text: JSONDict) -> None:
    body = text.get("body")
    if not isinstance(body, str) or not body:
        raise _missing("text['body']")
    if len(body) > 4096:
        raise _Rejected(100, "Param text['body'] must be at most 4096 characters long.")


def _check_interactive(interactive: JSONDict) -> None:
    kind = interactive.get("type")
    if kind not in _INTERACTIVE_TYPES:
        raise _missing("interactive['type']")
    header = interactive.get("header")
    if isinstance(header, dict) and header.get("type") == "text":
        _check_length(header.get("text"), "Header text", 60)
    footer = interactive.get("footer")
    if footer is not None:
        _check_length(footer.get("text") if isinstance(footer, dict) else None, "Footer text", 60)
    body = interactive.get("body")
    if body is not None or kind in ("button", "list"):
        if not isinstance(body, dict):
            raise _missing("interactive['body']")
        _check_length(body.get("text"), "Body text", 1024)
    action = _object(interactive, "action", "interactive['action']")
    if kind == "button":
        _check_buttons(action)
    elif kind == "list":
        _check_list(action)


def _check_buttons(action: JSONDict) -> None:
    buttons = action.get("buttons")
    if not isinstance(buttons, list) or not buttons:
        raise _missing("interactive['action']['buttons']")
    if len(buttons) > 3:
        raise _invalid("Buttons count invalid. Min count: 1, Max count: 3")
    ids: set[str] = set()
    titles: set[str] = set()
    for button in buttons:
        reply = button.get("reply") if isinstance(button, dict) else None
        if not isinstance(reply, dict) or button.get("type") != "reply":
            raise _missing("interactive['action']['buttons'][]['reply']")
        _check_length(reply.get("id"), "Button id", 256)
        _check_length(reply.get("title"), "Button title", 20)
        if reply["id"] in ids:
            raise _invalid("Button id is duplicate")
        if reply["title"] in titles:
            raise _invalid("Button title is duplicate")
        ids.add(reply["id"])
        titles.add(reply["title"])


def _check_list(action: JSONDict) -> None:
    _check_length(action.get("button"), "Button label", 20)
    sections = action.get("sections")
    if not isinstance(sections, list) or not sections:
        raise _missing("interactive['action']['sections']")
    if len(sections) > 10:
        raise _invalid("Sections count invalid. Min count: 1, Max count: 10")
    row_ids: set[str] = set()
    for section in sections:
        if not isinstance(section, dict):
            raise _missing("interactive['action']['sections'][]")
        if len(sections) > 1 or "title" in section:
            _check_length(section.get("title"), "Section title", 24)
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            raise _missing("interactive['action']['sections'][]['rows']")
        for row in rows:
            if not isinstance(row, dict):
                raise _missing("interactive['action']['sections'][]['rows'][]")
            _check_length(row.get("id"), "Row id", 200)
            _check_length(row.get("title"), "Row title", 24)
            if "description" in row:
                _check_length(row["description"], "Row description", 72, min_len=0)
            if row["id"] in row_ids:
                raise _invalid("Row id is duplicate")
            row_ids.add(row["id"])
    if len(row_ids) > 10:
        raise _invalid("Total row count exceed max allowed count: 10")


def _check_template(template: JSONDict) -> None:
    if not isinstance(template.get("name"), str) or not template["name"]:
        raise _missing("template['name']")
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str):
        raise _missing("template['language']['code']")
    components = template.get("components", [])
    if not isinstance(components, list):
        raise _missing("template['components']")
    for component in components:
        parameters = component.get("parameters", []) if isinstance(component, dict) else []
        for parameter in parameters:
            text = parameter.get("text") if isinstance(parameter, dict) else None
            # Meta's template rule: no newlines, no tabs, at most 4 spaces in a row.
            if isinstance(text, str) and ("\n" in text or "\t" in text or "     " in text):
                raise _Rejected(132018, wa_payloads.meta_error(132018).details)


@functools.cache
def _catalog_templates() -> dict[str, tuple[int, int]]:
    return param_counts(default_catalog())


def _check_registered(
    template: JSONDict, known: Mapping[str, tuple[int, int]], paused: Collection[str]
) -> None:
    """A (well-formed) template send against the templates that exist, as Meta checks
    it: the name in that language, not paused, as many parameters as defined."""
    name = template["name"]
    language = template["language"]["code"]
    expected = known.get(name)
    if expected is None or language != TEMPLATE_LANGUAGE:
        raise _Rejected(132001, f"template name ({name}) does not exist in {language}")
    if name in paused:
        raise _Rejected(132015, wa_payloads.meta_error(132015).details)
    given = {"header": 0, "body": 0, "button": 0}
    for component in template.get("components", []):
        kind = str(component.get("type", "")).lower() if isinstance(component, dict) else ""
        if kind in given:
            parameters = component.get("parameters", [])
            given[kind] += len(parameters) if isinstance(parameters, list) else 0
    for part, count in (("header", 0), ("body", expected[0]), ("button", expected[1])):
        if given[part] != count:
            raise _Rejected(
                132000,
                f"{part}: number of localizable_params ({given[part]}) does not match the "
                f"expected number of params ({count})",
            )


def _check_media(media: JSONDict) -> None:
    if not media.get("id") and not media.get("link"):
        raise _missing("id or link")
    caption = media.get("caption")
    if caption is not None:
        _check_length(caption, "Caption", 1024, min_len=0)


def _check_location(location: JSONDict) -> None:
    for key in ("latitude", "longitude"):
        if location.get(key) is None:
            raise _missing(f"location['{key}']")


def _check_reaction(reaction: JSONDict) -> None:
    if not isinstance(reaction.get("message_id"), str):
        raise _missing("reaction['message_id']")
    if not isinstance(reaction.get("emoji"), str):
        raise _missing("reaction['emoji']")


_CHECKS: dict[str, Callable[[JSONDict], None]] = {
    "text": _check_text,
    "interactive": _check_interactive,
    "template": _check_template,
    "location": _check_location,
    "reaction": _check_reaction,
    **{media: _check_media for media in _MEDIA_TYPES},
}


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _inbound_from_json(data: Any) -> InboundItem:
    """The item an `/_fake/inbound` request describes; ValueError if it describes none."""
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    wa_id = None if data.get("from") is None else str(data["from"])
    user_id = None if data.get("user_id") is None else str(data["user_id"])
    if wa_id is None and user_id is None:
        raise ValueError("'from' or 'user_id' is required")
    common: dict[str, Any] = {"user_id": user_id, "username": data.get("username")}
    if "name" in data:
        common["name"] = data["name"]
    if "text" in data:
        return wa_payloads.inbound_text(wa_id, str(data["text"]), **common)
    if isinstance(data.get("button_reply"), dict):
        reply = data["button_reply"]
        return wa_payloads.inbound_button_reply(
            wa_id, str(reply["id"]), str(reply["title"]), **common
        )
    if isinstance(data.get("list_reply"), dict):
        reply = data["list_reply"]
        return wa_payloads.inbound_list_reply(
            wa_id,
            str(reply["id"]),
            str(reply["title"]),
            str(reply.get("description", "")),
            **common,
        )
    if isinstance(data.get("button"), dict):
        button = data["button"]
        return wa_payloads.inbound_template_button(
            wa_id, str(button["payload"]), str(button["text"]), **common
        )
    if isinstance(data.get("type"), str):
        body = data.get("body")
        if not isinstance(body, dict):
            body = _default_body(data["type"])
        return wa_payloads.inbound_other(wa_id, data["type"], body, **common)
    raise ValueError("one of 'text', 'button_reply', 'list_reply', 'button', 'type' is required")


def _default_body(type_: str) -> JSONDict:
    if type_ == "unsupported":
        return {"type": "unknown"}
    if type_ == "location":
        return {"latitude": -34.6037, "longitude": -58.3816}
    return {
        "mime_type": "image/webp" if type_ == "sticker" else "application/octet-stream",
        "sha256": secrets.token_hex(32),
        "id": str(secrets.randbelow(10**15)),
    }


class FakeCloudAPI:
    """Meta's Cloud API send endpoint and webhook sender, served on loopback.

    Delay mode (`set_delay`): a send is recorded as accepted, and its status webhooks
    queued, *before* the fake waits and answers. That is a request which reached Meta and
    whose answer got lost: a client that times out and retries sends a second, distinct
    message, which is exactly what the sender must be robust to.
    """

    def __init__(
        self,
        *,
        phone_id: str,
        token: str | None = None,
        webhook_url: str | None = None,
        app_secret: str | None = None,
        statuses: Sequence[str] = ("sent", "delivered", "read"),
        status_delay: float = 0.0,
        seed: int | None = None,
        awkward: Awkward | None = None,
        status_concurrency: int = 16,
        display_phone_number: str = wa_payloads.DEFAULT_DISPLAY_PHONE_NUMBER,
        waba_id: str = wa_payloads.DEFAULT_WABA_ID,
        templates: Mapping[str, tuple[int, int]] | None = None,
        paused_templates: Collection[str] = (),
    ) -> None:
        for status in statuses:
            if status not in wa_payloads.STATUS_VALUES:
                raise ValueError(f"unknown status {status!r}")
        if status_concurrency < 1:
            raise ValueError("status_concurrency must be at least 1")
        self.phone_id = phone_id
        self.token = token
        # An account-level error (131031 account locked, 368 restricted…): while set,
        # every send and every read of the number fails with it.
        self.account_error: int | None = None
        self.probes = 0  # reads of the number's record
        self.webhook_url = webhook_url
        self.app_secret = app_secret
        self.statuses = tuple(statuses)
        self.status_delay = status_delay
        self.awkward = awkward or Awkward()
        self.gateway_timeouts = 0  # sends accepted and answered 504 (Awkward)
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        # The approved templates: name → (body parameters, URL button parameters); the
        # alerts' by default. Both may be changed while serving (or POST /_fake/templates).
        self.templates: dict[str, tuple[int, int]] = dict(
            _catalog_templates() if templates is None else templates
        )
        self.paused_templates: set[str] = set(paused_templates)
        self.sent: list[SentMessage] = []
        self.failed_sends: list[FailedSend] = []
        # The last status the webhook acknowledged (200) per sent message.
        self.acknowledged: dict[str, str] = {}

        self._status_concurrency = status_concurrency
        self._rng = random.Random(seed)
        self._forced: deque[_ForcedFailure] = deque()
        self._failure_rate = 0.0
        self._failure_codes: tuple[int, ...] = (131000, 130429)
        self._delay = 0.0

        self._seq = 0
        self._sent_total = 0
        self._failed_total = 0
        self._statuses_delivered = 0
        self._statuses_pending = 0
        self._status_attempts = 0
        self._inbound_posted = 0
        self._send_waiters: list[tuple[int, asyncio.Future[None]]] = []

        self._queue: asyncio.Queue[_StatusJob] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._base_url: str | None = None

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the fake Cloud API is not started")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `host:port` (0: any free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("already started")
        app = web.Application()
        app.router.add_post(r"/{version:v\d+\.\d+}/{phone_id}/messages", self._handle_send)
        app.router.add_get(r"/{version:v\d+\.\d+}/{phone_id}", self._handle_phone_number)
        app.router.add_post("/_fake/failures", self._handle_failures)
        app.router.add_get("/_fake/failures", self._handle_get_failures)
        app.router.add_post("/_fake/templates", self._handle_templates)
        app.router.add_get("/_fake/templates", self._handle_get_templates)
        app.router.add_post("/_fake/inbound", self._handle_inbound)
        app.router.add_get("/_fake/messages", self._handle_list_messages)
        app.router.add_delete("/_fake/messages", self._handle_clear_messages)
        app.router.add_get("/_fake/stats", self._handle_stats)
        self._closing.clear()
        self._runner, self._base_url = await serve(app, host, port)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._status_concurrency * 2),
            timeout=_WEBHOOK_TIMEOUT,
        )
        self._workers = [
            asyncio.create_task(self._status_worker(), name=f"fake-cloud-api-status-{n}")
            for n in range(self._status_concurrency)
        ]
        log.info("fake Cloud API serving on %s", self._base_url)
        return self._base_url

    async def stop(self) -> None:
        """Stop serving, abandon undelivered statuses, close the webhook session."""
        self._closing.set()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        for _, waiter in self._send_waiters:
            if not waiter.done():
                waiter.cancel()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- failure injection -------------------------------------------------------------

    def fail_next(self, code: int, count: int = 1, *, to: str | None = None) -> None:
        """The next `count` valid sends (only those to `to`, if given) fail with `code`.

        Codes 500, 502 and 503 answer a bare HTML error page instead of Meta's JSON.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        self._forced.append(_ForcedFailure(code=code, remaining=count, to=to))

    def set_failure_rate(
        self,
        rate: float,
        codes: Sequence[int] = (131000, 130429),
        *,
        seed: int | None = None,
    ) -> None:
        """A fraction `rate` of valid sends fail with a code drawn from `codes`."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if rate > 0 and not codes:
            raise ValueError("codes must not be empty")
        self._failure_rate = rate
        self._failure_codes = tuple(codes)
        if seed is not None:
            self._rng.seed(seed)

    def set_delay(self, seconds: float) -> None:
        """Every send waits `seconds` before answering (recorded first: see the class doc)."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self._delay = seconds

    def clear_failures(self) -> None:
        self._forced.clear()
        self._failure_rate = 0.0
        self._delay = 0.0

    def failure_config(self) -> JSONDict:
        return {
            "fail_next": [{"code": f.code, "count": f.remaining, "to": f.to} for f in self._forced],
            "rate": self._failure_rate,
            "codes": list(self._failure_codes),
            "delay": self._delay,
        }

    def _injected_failure(self, to: str) -> int | None:
        for forced in self._forced:
            if forced.to is None or forced.to == to:
                forced.remaining -= 1
                if forced.remaining == 0:
                    self._forced.remove(forced)
                return forced.code
        if self._failure_rate > 0 and self._rng.random() < self._failure_rate:
            return self._rng.choice(self._failure_codes)
        return None

    # --- records -----------------------------------------------------------------------

    def stats(self) -> JSONDict:
        return {
            "sent": self._sent_total,
            "failed": self._failed_total,
            "recorded": len(self.sent),
            "statuses_delivered": self._statuses_delivered,
            "statuses_pending": self._statuses_pending,
            "status_attempts": self._status_attempts,
            "inbound_posted": self._inbound_posted,
        }

    @property
    def statuses_delivered(self) -> int:
        """Status webhooks acknowledged with a 200."""
        return self._statuses_delivered

    @property
    def statuses_pending(self) -> int:
        """Status webhooks queued or being retried."""
        return self._statuses_pending

    @property
    def status_attempts(self) -> int:
        """Status webhook POSTs tried, retries included."""
        return self._status_attempts

    def clear_messages(self) -> None:
        """Forget recorded sends (sequence numbers keep increasing)."""
        self.sent.clear()
        self.failed_sends.clear()

    def messages(self, *, to: str | None = None, after: int = 0) -> list[SentMessage]:
        return [m for m in self.sent if m.seq > after and (to is None or m.to == to)]

    # A timeout parameter (ASYNC109) on purpose: tests and benchmarks want the bound and a
    # message saying how far it got in one call.
    async def wait_for_sends(self, n: int, timeout: float) -> list[SentMessage]:
        """All recorded sends once there are at least `n`; TimeoutError after `timeout` s."""
        if len(self.sent) < n:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (n, waiter)
            self._send_waiters.append(entry)
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"{len(self.sent)} of {n} sends recorded after {timeout} s"
                ) from None
            finally:
                self._send_waiters.remove(entry)
        return list(self.sent)

    async def wait_statuses_delivered(self, timeout: float) -> None:
        """Wait until every queued status webhook was acknowledged; TimeoutError otherwise."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self._statuses_pending} status webhooks still pending after {timeout} s"
            ) from None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _record_sent(self, sent: SentMessage) -> None:
        self.sent.append(sent)
        self._sent_total += 1
        if self._send_waiters:
            count = len(self.sent)
            for n, waiter in self._send_waiters:
                if count >= n and not waiter.done():
                    waiter.set_result(None)

    def _record_failure(
        self, body: JSONDict, code: int, received_at: datetime, to: str | None = None
    ) -> None:
        type_ = body.get("type")
        self.failed_sends.append(
            FailedSend(
                seq=self._next_seq(),
                to=to if to is not None else body.get("to"),
                type=type_ if isinstance(type_, str) else None,
                body=body,
                code=code,
                http_status=http_status_for(code),
                received_at=received_at,
            )
        )
        self._failed_total += 1

    # --- the Graph API route -----------------------------------------------------------

    async def _handle_send(self, request: web.Request) -> web.StreamResponse:
        received_at = datetime.now(UTC)
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        body: JSONDict = parsed if isinstance(parsed, dict) else {}
        response = self._answer_send(request, parsed, body, received_at)
        if self._delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._delay)
        return response

    def _answer_send(
        self, request: web.Request, parsed: Any, body: JSONDict, received_at: datetime
    ) -> web.Response:
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            self._record_failure(body, 190, received_at)
            return _oauth_error()
        phone_id = request.match_info["phone_id"]
        if phone_id != self.phone_id:
            self._record_failure(body, 100, received_at)
            return _unknown_object(phone_id)
        if not isinstance(parsed, dict):
            self._record_failure(body, 100, received_at)
            return _error_response(100, "The request body must be a JSON object.")
        try:
            to, type_ = _validate(body)
            if type_ == "template":
                _check_registered(body["template"], self.templates, self.paused_templates)
        except _Rejected as rejected:
            self._record_failure(body, rejected.code, received_at)
            return _error_response(rejected.code, rejected.details)
        code = self.account_error or self._injected_failure(to)
        if code is not None:
            self._record_failure(body, code, received_at, to)
            return _error_response(code)

        tracker = body.get("biz_opaque_callback_data")
        sent = SentMessage(
            seq=self._next_seq(),
            wamid=wa_payloads.new_wamid(),
            to=to,
            type=type_,
            body=body,
            biz_opaque_callback_data=tracker,
            received_at=received_at,
        )
        self._record_sent(sent)
        by_phone = "to" in body
        wa_id = _digits(to) if by_phone else None
        self._queue_statuses(sent, wa_id, None if by_phone else to)
        if self.awkward.gateway_timeout and self._rng.random() < self.awkward.gateway_timeout:
            # Graph took it; the answer died at the load balancer.
            self.gateway_timeouts += 1
            return _error_response(504)
        contact = {"input": to, "wa_id": wa_id} if by_phone else {"input": to, "user_id": to}
        message: JSONDict = {"id": sent.wamid}
        if type_ == "template":
            message["message_status"] = "accepted"
        return web.json_response(
            {"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]},
            dumps=_dumps,
        )

    async def _handle_phone_number(self, request: web.Request) -> web.Response:
        """GET /{version}/{phone_id}: the number's own record (what a probe reads).
        Answers only with the right token, for this number, with the account in order."""
        self.probes += 1
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return _oauth_error()
        phone_id = request.match_info["phone_id"]
        if phone_id != self.phone_id:
            return _unknown_object(phone_id)
        if self.account_error is not None:
            return _error_response(self.account_error)
        return web.json_response(
            {
                "id": self.phone_id,
                "display_phone_number": wa_payloads.DEFAULT_DISPLAY_PHONE_NUMBER,
                "verified_name": "Hosting de prueba",
                "quality_rating": "GREEN",
            }
        )

    # --- status webhooks ---------------------------------------------------------------

    def _queue_statuses(
        self, sent: SentMessage, recipient_id: str | None, recipient_user_id: str | None
    ) -> None:
        if not self.statuses or self.webhook_url is None or self.app_secret is None:
            return
        statuses = self._awkward_statuses()
        self._statuses_pending += len(statuses)
        self._queue.put_nowait(
            _StatusJob(
                wamid=sent.wamid,
                recipient_id=recipient_id,
                recipient_user_id=recipient_user_id,
                biz_opaque_callback_data=sent.biz_opaque_callback_data,
                category="utility" if sent.type == "template" else "service",
                remaining=statuses,
                due=asyncio.get_running_loop().time() + self.status_delay,
            )
        )

    def _awkward_statuses(self) -> tuple[str, ...]:
        """The statuses one message gets, as Meta's habits (`awkward`) have it."""
        if self.awkward == Awkward():
            return self.statuses
        statuses = list(self.statuses)
        roll = self._rng.random
        if "sent" in statuses and roll() < self.awkward.failed_after_sent:
            return ("sent", "failed")
        if "delivered" in statuses and roll() < self.awkward.skip_delivered:
            statuses.remove("delivered")
        if {"delivered", "read"} <= set(statuses) and roll() < self.awkward.out_of_order:
            d, r = statuses.index("delivered"), statuses.index("read")
            statuses[d], statuses[r] = statuses[r], statuses[d]
        if statuses and roll() < self.awkward.repeat:
            at = self._rng.randrange(len(statuses))
            statuses.insert(at, statuses[at])
        return tuple(statuses)

    async def _status_worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            try:
                wait = job.due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._post_status(job)
                self._statuses_delivered += 1
                self._statuses_pending -= 1
                if len(job.remaining) > 1:
                    # The next status is queued only once this one was acknowledged, so a
                    # message's statuses reach the webhook in order; other messages' go on.
                    self._queue.put_nowait(
                        replace(
                            job, remaining=job.remaining[1:], due=loop.time() + self.status_delay
                        )
                    )
            finally:
                self._queue.task_done()

    async def _post_status(self, job: _StatusJob) -> None:
        """POST one status until the webhook answers 200 (Meta delivers at least once)."""
        assert self.webhook_url is not None and self.app_secret is not None
        item = wa_payloads.status_item(
            job.wamid,
            job.remaining[0],
            job.recipient_id,
            recipient_user_id=job.recipient_user_id,
            biz_opaque_callback_data=job.biz_opaque_callback_data,
            category=job.category,
        )
        payload = wa_payloads.statuses_update(
            self.phone_id,
            [item],
            display_phone_number=self.display_phone_number,
            waba_id=self.waba_id,
        )
        # Signed once: a retry re-posts the very same bytes, as Meta's redelivery does.
        data, headers = wa_payloads.signed_body(payload, self.app_secret)
        backoff = _STATUS_BACKOFF_START
        while True:
            self._status_attempts += 1
            status = await self._post(self.webhook_url, data, headers)
            if status == 200:
                self.acknowledged[job.wamid] = job.remaining[0]
                return
            log.debug("status webhook for %s answered %s, retrying", job.wamid, status)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _STATUS_BACKOFF_CAP)

    async def _post(self, url: str, data: bytes, headers: dict[str, str]) -> int | None:
        """The HTTP status of one POST, None when the connection failed."""
        if self._session is None:
            raise RuntimeError("the fake Cloud API is not started")
        try:
            async with self._session.post(url, data=data, headers=headers) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    # --- inbound simulator -------------------------------------------------------------

    async def post_webhook(self, payload: JSONDict) -> int | None:
        """Post `payload` to the webhook, signed when an app secret is set, once.

        Returns the webhook's HTTP status, None if it could not be reached.
        """
        if self.webhook_url is None:
            raise RuntimeError("no webhook_url configured")
        if self.app_secret is not None:
            data, headers = wa_payloads.signed_body(payload, self.app_secret)
        else:
            data = wa_payloads.json_bytes(payload)
            headers = {"Content-Type": "application/json"}
        status = await self._post(self.webhook_url, data, headers)
        self._inbound_posted += 1
        return status

    async def send_inbound(self, item: InboundItem) -> tuple[str, int]:
        """Post a customer's message as Meta would; returns its wamid and the webhook's status.

        The status is 0 when the webhook could not be reached.
        """
        payload = wa_payloads.messages_update(
            self.phone_id,
            [item],
            display_phone_number=self.display_phone_number,
            waba_id=self.waba_id,
        )
        status = await self.post_webhook(payload)
        return item.wamid, status or 0

    # --- the fake's own routes ---------------------------------------------------------

    async def _handle_failures(self, request: web.Request) -> web.Response:
        """Configure failures: any of `clear`, `fail_next` (one or a list), `rate`, `delay`.

        `{"clear": true, "fail_next": {"code": 131056, "count": 2, "to": "549…"},
        "rate": 0.1, "codes": [131000, 130429], "seed": 7, "delay": 0.5}` — applied in
        that order; answers the resulting configuration.
        """
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            if data.get("clear"):
                self.clear_failures()
            fail_next = data.get("fail_next")
            for rule in fail_next if isinstance(fail_next, list) else [fail_next]:
                if rule is not None:
                    self.fail_next(int(rule["code"]), int(rule.get("count", 1)), to=rule.get("to"))
            if "rate" in data:
                codes = data.get("codes", (131000, 130429))
                seed = data.get("seed")
                self.set_failure_rate(
                    float(data["rate"]),
                    [int(c) for c in codes],
                    seed=None if seed is None else int(seed),
                )
            if "delay" in data:
                self.set_delay(float(data["delay"]))
        except (ValueError, KeyError, TypeError) as error:
            return web.json_response({"error": str(error)}, status=400, dumps=_dumps)
        return web.json_response(self.failure_config(), dumps=_dumps)

    async def _handle_get_failures(self, request: web.Request) -> web.Response:
        return web.json_response(self.failure_config(), dumps=_dumps)

    def template_config(self) -> JSONDict:
        return {
            "templates": {name: list(counts) for name, counts in sorted(self.templates.items())},
            "paused": sorted(self.paused_templates),
        }

    async def _handle_templates(self, request: web.Request) -> web.Response:
        """Configure templates: `{"templates": {"aviso": [2, 1]}}` adds or redefines some
        (body and button parameter counts), `{"paused": ["aviso"]}` sets which are
        paused; answers the resulting configuration."""
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            added = data.get("templates", {})
            if not isinstance(added, dict):
                raise ValueError("templates must be an object")
            defined = {
                str(name): (int(body), int(button)) for name, (body, button) in added.items()
            }
            paused = data.get("paused")
            if paused is not None:
                if not isinstance(paused, list):
                    raise ValueError("paused must be a list of template names")
                unknown = {str(n) for n in paused} - self.templates.keys() - defined.keys()
                if unknown:
                    raise ValueError(f"no such templates: {sorted(unknown)}")
        except (ValueError, KeyError, TypeError) as error:
            return web.json_response({"error": str(error)}, status=400, dumps=_dumps)
        self.templates.update(defined)
        if paused is not None:
            self.paused_templates = {str(n) for n in paused}
        return web.json_response(self.template_config(), dumps=_dumps)

    async def _handle_get_templates(self, request: web.Request) -> web.Response:
        return web.json_response(self.template_config(), dumps=_dumps)

    async def _handle_inbound(self, request: web.Request) -> web.Response:
        if self.webhook_url is None:
            return web.json_response({"error": "no webhook_url configured"}, status=409)
        try:
            item = _inbound_from_json(await request.json())
        except (ValueError, KeyError, TypeError) as error:
            return web.json_response({"error": str(error)}, status=400, dumps=_dumps)
        wamid, status = await self.send_inbound(item)
        return web.json_response({"wamid": wamid, "webhook_status": status}, dumps=_dumps)

    async def _handle_list_messages(self, request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            return web.json_response({"error": "after must be an integer"}, status=400)
        found = self.messages(to=request.query.get("to"), after=after)
        return web.json_response([m.to_json() for m in found], dumps=_dumps)

    async def _handle_clear_messages(self, request: web.Request) -> web.Response:
        self.clear_messages()
        return web.json_response({"cleared": True})

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats(), dumps=_dumps)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot.fakes.cloud_api",
        description="Serve a fake WhatsApp Cloud API until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--phone-id", required=True)
    parser.add_argument("--token")
    parser.add_argument("--webhook-url")
    parser.add_argument("--app-secret")
    parser.add_argument(
        "--statuses",
        default="sent,delivered,read",
        help="comma-separated statuses to post after each send, or 'none'",
    )
    parser.add_argument("--status-delay", type=float, default=0.0)
    parser.add_argument("--status-concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    statuses = () if args.statuses == "none" else tuple(filter(None, args.statuses.split(",")))
    fake = FakeCloudAPI(
        phone_id=args.phone_id,
        token=args.token,
        webhook_url=args.webhook_url,
        app_secret=args.app_secret,
        statuses=statuses,
        status_delay=args.status_delay,
        seed=args.seed,
        status_concurrency=args.status_concurrency,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    url = await fake.start(args.host, args.port)
    print(url, flush=True)
    try:
        await stopping.wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
