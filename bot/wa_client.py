"""Sending through pywa (`pywa_async`), pointed at `WHATSAPP_API_URL`.

pywa fixes its Graph base URL to https://graph.facebook.com; tests, the sandbox and the
benchmarks use a fake Cloud API on loopback, so every request goes through an httpx
transport that rewrites scheme, host and port and leaves the path alone.
"""

from __future__ import annotations

import httpx
from pywa_async.client import WhatsApp
from pywa_async.types.callback import Button, Section, SectionList, SectionRow
from pywa_async.types.templates import BodyText, TemplateLanguage

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
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        inner = httpx.AsyncHTTPTransport(limits=limits, retries=0)
        transport: httpx.AsyncBaseTransport = inner
        if api_url.rstrip("/") != "https://graph.facebook.com":
            transport = RedirectTransport(api_url, inner)
        self._session = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout))
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
        match message:
            case Text(body=body, preview_url=preview):
                sent = await self._wa.send_message(
                    to=to, text=body, preview_url=preview, tracker=tracker
                )
            case Buttons(body=body, buttons=buttons, header=header, footer=footer):
                sent = await self._wa.send_message(
                    to=to,
                    text=body,
                    header=header,
                    footer=footer,
                    buttons=[Button(title=b.title, callback_data=b.id) for b in buttons],
                    tracker=tracker,
                )
            case ListMessage(
                body=body, button=button, sections=sections, header=header, footer=footer
            ):
                sent = await self._wa.send_message(
                    to=to,
                    text=body,
                    header=header,
                    footer=footer,
                    buttons=SectionList(
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
                    ),
                    tracker=tracker,
                )
            case Template(name=name, language=language, body_params=params):
                sent_template = await self._wa.send_template(
                    to=to,
                    name=name,
                    language=TemplateLanguage(language),
                    params=[BodyText.params(*params)] if params else [],  # type: ignore[arg-type]
                    tracker=tracker,
                )
                return str(sent_template.id)
        return str(sent.id)
