"""Sending through pywa (`pywa_async`), pointed at `WHATSAPP_API_URL`.

pywa fixes its Graph base URL to https://graph.facebook.com; tests, the sandbox and the
benchmarks use a fake Cloud API on loopback, so every request goes through an httpx
transport that rewrites scheme, host and port and leaves the path alone.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
from pywa_async.client import WhatsApp
from pywa_async.types.callback import Button, Section, SectionList, SectionRow
from pywa_async.types.templates import BodyText

from flows.outbound import Buttons, ListMessage, Message, Template, Text


class RedirectTransport(httpx.AsyncBaseTransport):
    """Sends every request to `base_url`'s scheme, host and port, keeping path and query."""

    def __init__(self, base_url: str, inner: httpx.AsyncBaseTransport | None = None) -> None:
        target = httpx.URL(base_url)
        self._scheme = target.scheme
        self._host = target.host
        self._port = target.port
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme=self._scheme, host=self._host, port=self._port)
        request.headers["Host"] = request.url.netloc.decode("ascii")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


# Hop-by-hop and body-framing headers: aiohttp sets or consumes them itself.
_SKIP_REQUEST = {"host", "content-length", "transfer-encoding", "connection"}
_SKIP_RESPONSE = {"content-encoding", "content-length", "transfer-encoding", "connection"}


class AiohttpTransport(httpx.AsyncBaseTransport):
    """The requests pywa builds with httpx, sent with aiohttp.

    httpcore's pool picks a connection in O(connections × requests) per request: at 64
    sends in flight it took 57 % of the sender's CPU in our benchmark; aiohttp's
    connector does not. (The httpx-aiohttp package does this too, but reports a
    connection dropped after the request was sent as ConnectTimeout, which would make an
    ambiguous send look safe to repeat.) Errors map to httpx's: a request that never
    left is ConnectError/ConnectTimeout/PoolTimeout, one that may have arrived is
    ReadTimeout/ReadError.
    """

    def __init__(self, *, max_connections: int, timeout: float) -> None:
        self._limit = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                timeout=self._timeout,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [
            (k, v) for k, v in request.headers.multi_items() if k.lower() not in _SKIP_REQUEST
        ]
        try:
            async with self._client().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as response:
                content = await response.read()
        except aiohttp.ClientConnectorError as e:
            raise httpx.ConnectError(str(e), request=request) from e
        except aiohttp.ConnectionTimeoutError as e:
            raise httpx.ConnectTimeout(str(e), request=request) from e
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise httpx.ReadTimeout(str(e) or "timed out", request=request) from e
        except aiohttp.ClientError as e:
            raise httpx.ReadError(str(e) or type(e).__name__, request=request) from e
        return httpx.Response(
            status_code=response.status,
            headers=[
                (k, v) for k, v in response.headers.items() if k.lower() not in _SKIP_RESPONSE
            ],
            content=content,
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class CloudAPI:
    """The one place messages leave for WhatsApp. Returns the wamid; raises pywa's
    `WhatsAppError` (with `.code`) or httpx's transport errors."""

    def __init__(
        self,
        *,
        api_url: str,
        phone_id: str,
        token: str,
        api_version: str,
        timeout: float,
        max_connections: int,
    ) -> None:
        inner = AiohttpTransport(max_connections=max_connections, timeout=timeout)
        transport: httpx.AsyncBaseTransport = inner
        if api_url.rstrip("/") != "https://graph.facebook.com":
            transport = RedirectTransport(api_url, inner)
        self._session = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout))
        self._phone_id = phone_id
        self._wa = WhatsApp(
            phone_id=phone_id,
            token=token or "unset",
            session=self._session,
            api_version=api_version,
            validate_updates=False,
        )

    async def close(self) -> None:
        await self._session.aclose()

    async def send(self, to: str, message: Message | Template, *, tracker: str) -> str:
        """Send through pywa's Graph API layer, addressing the recipient ourselves.

        pywa's own send methods guess the kind of recipient from its shape: digits are a
        phone, `CC.digits` a business-scoped user id, anything else a *group*. BSUIDs are
        opaque (Meta promises no format), so one with letters would go out as a group
        message. A recipient here is a phone when it is all digits and a BSUID otherwise,
        never a group."""
        typ, body = _graph_message(message)
        answer = await self._wa.api.send_message(
            sender=self._phone_id,
            **_addressed(to),
            typ=typ,
            msg=body,
            biz_opaque_callback_data=tracker,
        )
        return str(answer["messages"][0]["id"])

    async def probe(self) -> None:
        """Read the number's own record: answers only when the token, its permissions and
        the account are in order (raises WhatsAppError otherwise)."""
        await self._wa.api.get_business_phone_number(phone_id=self._phone_id, fields=("id",))


def _addressed(to: str) -> dict[str, Any]:
    """`to` for a phone (a WhatsApp id, digits), `recipient` for a business-scoped user
    id; always an individual."""
    if to.isascii() and to.isdigit():
        return {"to": to, "recipient": None, "recipient_type": "individual"}
    return {"to": None, "recipient": to, "recipient_type": "individual"}


def _graph_message(message: Message | Template) -> tuple[str, dict[str, Any]]:
    """The Cloud API's `type` and its object for a message (pywa's types build the
    buttons, lists and template parameters)."""
    match message:
        case Text(body=body, preview_url=preview):
            return "text", {"body": body, "preview_url": preview}
        case Buttons(body=body, buttons=buttons, header=header, footer=footer):
            action = {
                "buttons": [Button(title=b.title, callback_data=b.id).to_dict() for b in buttons]
            }
            return "interactive", _interactive("button", action, body, header, footer)
        case ListMessage(body=body, button=button, sections=sections, header=header, footer=footer):
            action = SectionList(
                button_title=button,
                sections=[
                    Section(
                        title=s.title,
                        rows=[
                            SectionRow(
                                title=r.title,
                                callback_data=r.id,
                                description=r.description or None,
                            )
                            for r in s.rows
                        ],
                    )
                    for s in sections
                ],
            ).to_dict()
            return "interactive", _interactive("list", action, body, header, footer)
        case Template(
            name=name, language=language, body_params=params, button_params=button_params
        ):
            template: dict[str, Any] = {"name": name, "language": {"code": language}}
            components: list[dict[str, Any]] = []
            if params:
                # pywa types `params` as its own objects; plain strings are what it sends.
                body_text = BodyText.params(*params)  # type: ignore[arg-type]
                components.append(body_text.to_dict())
            if button_params:
                # The URL button's dynamic suffix (Cloud API: type button, sub_type url).
                components.append(
                    {
                        "type": "button",
                        "sub_type": "url",
                        "index": "0",
                        "parameters": [{"type": "text", "text": p} for p in button_params],
                    }
                )
            if components:
                template["components"] = components
            return "template", template


def _interactive(
    typ: str, action: dict[str, Any], body: str, header: str | None, footer: str | None
) -> dict[str, Any]:
    interactive: dict[str, Any] = {"type": typ, "action": action, "body": {"text": body}}
    if header:
        interactive["header"] = {"type": "text", "text": header}
    if footer:
        interactive["footer"] = {"text": footer}
    return interactive
