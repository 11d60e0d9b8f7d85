"""Builders of the payloads Meta's Cloud API posts to a business's webhook.

Tests, the sandbox, the fake Cloud API and the benchmarks use these to produce exactly
what Meta sends, so the shapes follow Meta's `messages` webhook reference (text,
interactive, button, system and status messages):

- **classic** shape: `contacts: [{"profile": {"name"}, "wa_id"}]`, the message has `from`.
- **2026** shape (business-scoped user ids, usernames): the contact carries `user_id`
  (the BSUID, e.g. `AR.1502576394655843`), `profile.username` when the user has one, and
  `wa_id` only while the phone is known to the business; the message carries
  `from_user_id`, and `from` only with a known phone. Every `inbound_*` builder produces
  it when given a `user_id`.
- System messages (a customer changed number) come without a `contacts` array.
- Status updates may come with or without `contacts`.

Everything here is pure: plain JSON-ready dicts, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.signatures import sign

JSONDict = dict[str, Any]

DEFAULT_DISPLAY_PHONE_NUMBER = "15550000000"
DEFAULT_WABA_ID = "WABA_ID"

STATUS_VALUES = ("sent", "delivered", "read", "failed")


@dataclass(frozen=True, slots=True)
class InboundItem:
    """One element of a webhook's `messages` array and the `contacts` element of its sender.

    `contact` is None for system messages: Meta sends those without contacts.
    """

    message: JSONDict
    contact: JSONDict | None

    @property
    def wamid(self) -> str:
        return str(self.message["id"])


@dataclass(frozen=True, slots=True)
class MetaError:
    """One entry of Meta's error-code catalogue (Cloud API "Error codes" page)."""

    code: int
    title: str
    details: str
    http_status: int = 400
    subcode: int | None = None


# Titles and descriptions as Meta's error-code reference words them; the HTTP status is
# the one the Graph API answers a send with.
META_ERRORS: dict[int, MetaError] = {
    e.code: e
    for e in (
        MetaError(1, "API Unknown", "Invalid request or possible server error."),
        MetaError(
            2,
            "API Service",
            "Temporary due to downtime or due to being overloaded.",
            http_status=503,
        ),
        MetaError(4, "API Too Many Calls", "The app has reached its API call rate limit."),
        MetaError(
            80007,
            "Rate limit issues",
            "The WhatsApp Business Account has reached its rate limit.",
        ),
        MetaError(
            131031,
            "Account has been locked",
            "The WhatsApp Business Account is restricted or disabled for violating a "
            "platform policy, or its data could not be verified.",
        ),
        MetaError(131049, "Meta chose not to deliver", "Sent to maintain healthy engagement."),
        MetaError(
            131050,
            "User opted out of marketing messages",
            "The recipient chose to stop receiving marketing messages from this business.",
        ),
        MetaError(
            100,
            "Invalid parameter",
            "The request included one or more unsupported or misspelled parameters.",
        ),
        MetaError(
            130429,
            "Rate limit hit",
            "Cloud API message throughput has been reached.",
            http_status=429,
        ),
        MetaError(
            131000,
            "Something went wrong",
            "Message failed to send due to an unknown error.",
            http_status=500,
        ),
        MetaError(
            131008,
            "Required parameter is missing",
            "The request is missing a required parameter.",
        ),
        MetaError(
            131009,
            "Parameter value is not valid",
            "One or more parameter values are invalid.",
        ),
        MetaError(
            131016,
            "Service unavailable",
            "A service is temporarily unavailable.",
            http_status=503,
        ),
        MetaError(
            131026,
            "Message undeliverable",
            "Unable to deliver message. Reasons can include: the recipient phone number is "
            "not a WhatsApp phone number; the recipient has not accepted the latest Terms of "
            "Service; the recipient is using an outdated WhatsApp client.",
            subcode=2494010,
        ),
        MetaError(
            131047,
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the "
            "customer last replied to this number.",
        ),
        MetaError(
            131048,
            "Spam rate limit hit",
            "Message failed to send because there are restrictions on how many messages "
            "can be sent from this phone number.",
        ),
        MetaError(
            131051,
            "Unsupported message type",
            "Message type is not currently supported.",
        ),
        MetaError(
            131056,
            "(Business Account, Consumer Account) pair rate limit hit",
            "Too many messages sent from the sender phone number to the same recipient "
            "phone number in a short period of time.",
            http_status=429,
        ),
        MetaError(
            131057,
            "Account in maintenance mode",
            "Business Account is in maintenance mode. The WhatsApp Business Account is "
            "likely undergoing a throughput upgrade.",
        ),
        MetaError(
            132000,
            "Template Param Count Mismatch",
            "The number of variable parameter values included in the request did not match "
            "the number of variable parameters defined in the template.",
        ),
        MetaError(
            132001,
            "Template does not exist",
            "The template does not exist in the specified language or the template has not "
            "been approved.",
        ),
        MetaError(
            132015,
            "Template is Paused",
            "Template is paused due to low quality so it cannot be sent in a template message.",
        ),
        MetaError(
            132018,
            "Template Parameter Format Mismatch",
            "Param text cannot have new-line/tab characters or more than 4 consecutive spaces.",
        ),
    )
}


def meta_error(code: int) -> MetaError:
    """The catalogue entry of `code`, or a generic one for codes not listed."""
    known = META_ERRORS.get(code)
    if known is not None:
        return known
    return MetaError(code, f"Error {code}", f"Cloud API error {code}.")


def new_wamid() -> str:
    """A fresh, unique message id shaped like Meta's (`wamid.` + base64)."""
    # os.urandom, never a seeded generator: two fakes sharing one database must not collide.
    return "wamid." + base64.b64encode(b"\x15\x02\x00\x12\x18\x14" + os.urandom(20)).decode()


def new_user_id(country: str = "AR") -> str:
    """A fresh business-scoped user id (BSUID): ISO country code, a dot, digits."""
    return f"{country}.{secrets.randbelow(10**19):019d}"


def unix_now() -> str:
    return str(int(time.time()))


def _timestamp(timestamp: int | None) -> str:
    return unix_now() if timestamp is None else str(timestamp)


def _contact(wa_id: str | None, user_id: str | None, name: str, username: str | None) -> JSONDict:
    if wa_id is None and user_id is None:
        raise ValueError("a sender needs a wa_id, a user_id or both")
    if user_id is None:
        return {"profile": {"name": name}, "wa_id": wa_id}
    profile: JSONDict = {"name": name}
    if username is not None:
        profile["username"] = username
    contact: JSONDict = {"profile": profile}
    if wa_id is not None:
        contact["wa_id"] = wa_id
    contact["user_id"] = user_id
    return contact


def _inbound(
    wa_id: str | None,
    type_: str,
    content: Any,
    *,
    wamid: str | None,
    name: str,
    user_id: str | None,
    username: str | None,
    timestamp: int | None,
    context_wamid: str | None = None,
    with_context: bool = False,
) -> InboundItem:
    contact = _contact(wa_id, user_id, name, username)
    message: JSONDict = {}
    if with_context:
        # Replies to buttons and lists always quote the business message they answer.
        message["context"] = {
            "from": DEFAULT_DISPLAY_PHONE_NUMBER,
            "id": context_wamid or new_wamid(),
        }
    if wa_id is not None:
        message["from"] = wa_id
    if user_id is not None:
        message["from_user_id"] = user_id
    message["id"] = wamid or new_wamid()
    message["timestamp"] = _timestamp(timestamp)
    message["type"] = type_
    message[type_] = content
    return InboundItem(message=message, contact=contact)


def inbound_text(
    wa_id: str | None,
    text: str,
    *,
    wamid: str | None = None,
    name: str = "Cliente",
    user_id: str | None = None,
    username: str | None = None,
    timestamp: int | None = None,
) -> InboundItem:
    """A text message from a customer."""
    return _inbound(
        wa_id,
        "text",
        {"body": text},
        wamid=wamid,
        name=name,
        user_id=user_id,
        username=username,
        timestamp=timestamp,
    )


def inbound_button_reply(
    wa_id: str | None,
    button_id: str,
    title: str,
    *,
    context_wamid: str | None = None,
    wamid: str | None = None,
    name: str = "Cliente",
    user_id: str | None = None,
    username: str | None = None,
    timestamp: int | None = None,
) -> InboundItem:
    """A tap on a reply button of an interactive message (`interactive.button_reply`)."""
    return _inbound(
        wa_id,
        "interactive",
        {"type": "button_reply", "button_reply": {"id": button_id, "title": title}},
        wamid=wamid,
        name=name,
        user_id=user_id,
        username=username,
        timestamp=timestamp,
        context_wamid=context_wamid,
        with_context=True,
    )


def inbound_list_reply(
    wa_id: str | None,
    row_id: str,
    title: str,
    description: str = "",
    *,
    context_wamid: str | None = None,
    wamid: str | None = None,
    name: str = "Cliente",
    user_id: str | None = None,
    username: str | None = None,
    timestamp: int | None = None,
) -> InboundItem:
    """A row picked from a list message (`interactive.list_reply`)."""
    reply: JSONDict = {"id": row_id, "title": title}
    if description:
        reply["description"] = description
    return _inbound(
        wa_id,
        "interactive",
        {"type": "list_reply", "list_reply": reply},
        wamid=wamid,
        name=name,
        user_id=user_id,
        username=username,
        timestamp=timestamp,
        context_wamid=context_wamid,
        with_context=True,
    )


def inbound_template_button(
    wa_id: str | None,
    payload: str,
    text: str,
    *,
    context_wamid: str | None = None,
    wamid: str | None = None,
    name: str = "Cliente",
    user_id: str | None = None,
    username: str | None = None,
    timestamp: int | None = None,
) -> InboundItem:
    """A tap on a quick-reply button of a template (type `button`, not `interactive`)."""
    return _inbound(
        wa_id,
        "button",
        {"payload": payload, "text": text},
        wamid=wamid,
        name=name,
        user_id=user_id,
        username=username,
        timestamp=timestamp,
        context_wamid=context_wamid,
        with_context=True,
    )


def inbound_other(
    wa_id: str | None,
    type_: str,
    body: JSONDict,
    *,
    wamid: str | None = None,
    name: str = "Cliente",
    user_id: str | None = None,
    username: str | None = None,
    timestamp: int | None = None,
    errors: list[JSONDict] | None = None,
) -> InboundItem:
    """Any other message type: sticker, image, location, reaction, unsupported, ….

    `body` becomes the object under the `type_` key. An `unsupported` message carries
    Meta's 131051 error unless other `errors` are given.
    """
    item = _inbound(
        wa_id,
        type_,
        body,
        wamid=wamid,
        name=name,
        user_id=user_id,
        username=username,
        timestamp=timestamp,
    )
    if errors is None and type_ == "unsupported":
        errors = [error_object(131051)]
    if errors is not None:
        item.message["errors"] = errors
    return item


def inbound_media(
    wa_id: str | None, kind: str, caption: str | None = None, **sender: Any
) -> InboundItem:
    """A photo, video or document (`kind`), with the words written under it if any."""
    media: JSONDict = {
        "mime_type": {"image": "image/jpeg", "video": "video/mp4"}.get(kind, "application/pdf"),
        "sha256": secrets.token_hex(32),
        "id": str(secrets.randbelow(10**15)),
    }
    if caption is not None:
        media["caption"] = caption
    return inbound_other(wa_id, kind, media, **sender)


def inbound_welcome(wa_id: str | None, **sender: Any) -> InboundItem:
    """`request_welcome`: the user opened a chat with the business for the first time.
    It has no object of its own, only the type."""
    item = inbound_other(wa_id, "request_welcome", {}, **sender)
    del item.message["request_welcome"]
    return item


def inbound_edit(wa_id: str | None, original_wamid: str, text: str, **sender: Any) -> InboundItem:
    """The user edited their message `original_wamid`; it now says `text`."""
    edited = {"type": "text", "text": {"body": text}}
    return inbound_other(
        wa_id, "edit", {"original_message_id": original_wamid, "message": edited}, **sender
    )


def inbound_revoke(wa_id: str | None, original_wamid: str, **sender: Any) -> InboundItem:
    """The user deleted their message `original_wamid`."""
    return inbound_other(wa_id, "revoke", {"original_message_id": original_wamid}, **sender)


def inbound_system_changed_number(
    old_wa_id: str,
    new_wa_id: str,
    *,
    legacy: bool = False,
    name: str = "Cliente",
    new_user_id: str | None = None,
    previous_user_id: str | None = None,
    wamid: str | None = None,
    timestamp: int | None = None,
) -> InboundItem:
    """The system message telling that a customer moved to a new phone number.

    Current shape: `system.type` `user_changed_number` with the new number in
    `system.wa_id` (and the new BSUID in `system.user_id`); the old number is `from`.
    Legacy shape (`legacy=True`): `customer_changed_number` with `customer` and
    `new_wa_id`. Either way there is no contact.
    """
    system: JSONDict = {"body": f"User {name} changed from +{old_wa_id} to +{new_wa_id}"}
    if legacy:
        system |= {"customer": old_wa_id, "new_wa_id": new_wa_id, "type": "customer_changed_number"}
    else:
        system |= {"wa_id": new_wa_id, "type": "user_changed_number"}
        if new_user_id is not None:
            system["user_id"] = new_user_id
        if previous_user_id is not None:
            system["previous_user_id"] = previous_user_id
    message: JSONDict = {
        "from": old_wa_id,
        "id": wamid or new_wamid(),
        "timestamp": _timestamp(timestamp),
        "type": "system",
        "system": system,
    }
    return InboundItem(message=message, contact=None)


def inbound_system_changed_user_id(
    previous_user_id: str,
    new_user_id: str,
    *,
    wamid: str | None = None,
    timestamp: int | None = None,
) -> InboundItem:
    """The system message telling that a user's business-scoped user id changed with no
    phone number to share (`user_changed_user_id`): no `from`, no contact; the message
    names its sender by BSUID."""
    message: JSONDict = {
        "from_user_id": new_user_id,
        "id": wamid or new_wamid(),
        "timestamp": _timestamp(timestamp),
        "type": "system",
        "system": {
            "body": "User changed their business-scoped user ID",
            "type": "user_changed_user_id",
            "user_id": new_user_id,
            "previous_user_id": previous_user_id,
        },
    }
    return InboundItem(message=message, contact=None)


def error_object(code: int) -> JSONDict:
    """An error as webhooks carry it (in failed statuses and unsupported messages)."""
    error = meta_error(code)
    return {
        "code": error.code,
        "title": error.title,
        "message": error.title,
        "error_data": {"details": error.details},
    }


def _conversation_id(recipient: str) -> str:
    # Stable per recipient, like one open conversation per customer.
    return hashlib.sha256(recipient.encode()).hexdigest()[:32]


def status_item(
    wamid: str,
    status: str,
    recipient_id: str | None,
    *,
    biz_opaque_callback_data: str | None = None,
    timestamp: int | None = None,
    errors: list[JSONDict] | None = None,
    recipient_user_id: str | None = None,
    category: str = "service",
) -> JSONDict:
    """One element of a webhook's `statuses` array.

    `sent` and `delivered` carry `conversation` and `pricing` (per-message pricing);
    `failed` carries `errors` (Meta's 131026 "Message undeliverable" unless given).
    """
    if status not in STATUS_VALUES:
        raise ValueError(f"status must be one of {STATUS_VALUES}, got {status!r}")
    if recipient_id is None and recipient_user_id is None:
        raise ValueError("a status needs a recipient_id, a recipient_user_id or both")
    item: JSONDict = {"id": wamid, "status": status, "timestamp": _timestamp(timestamp)}
    if recipient_id is not None:
        item["recipient_id"] = recipient_id
    if recipient_user_id is not None:
        item["recipient_user_id"] = recipient_user_id
    if biz_opaque_callback_data is not None:
        item["biz_opaque_callback_data"] = biz_opaque_callback_data
    if status in ("sent", "delivered"):
        recipient = recipient_user_id or recipient_id or ""
        item["conversation"] = {
            "id": _conversation_id(recipient),
            "origin": {"type": category},
        }
        item["pricing"] = {"billable": True, "pricing_model": "PMP", "category": category}
    if status == "failed":
        item["errors"] = errors if errors is not None else [error_object(131026)]
    elif errors is not None:
        item["errors"] = errors
    return item


def _dedup_contacts(contacts: Iterable[JSONDict]) -> list[JSONDict]:
    seen: set[str] = set()
    unique: list[JSONDict] = []
    for contact in contacts:
        key = str(contact.get("user_id") or contact.get("wa_id"))
        if key not in seen:
            seen.add(key)
            unique.append(contact)
    return unique


def _status_contact(status: JSONDict) -> JSONDict:
    contact: JSONDict = {}
    if "recipient_id" in status:
        contact["wa_id"] = status["recipient_id"]
    if "recipient_user_id" in status:
        contact["user_id"] = status["recipient_user_id"]
    return contact


def _change_value(
    phone_number_id: str,
    display_phone_number: str,
    items: Sequence[InboundItem],
    statuses: Sequence[JSONDict],
    *,
    status_contacts: bool,
) -> JSONDict:
    value: JSONDict = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
    }
    contacts = [item.contact for item in items if item.contact is not None]
    if status_contacts:
        contacts += [_status_contact(status) for status in statuses]
    if contacts:
        value["contacts"] = _dedup_contacts(contacts)
    if items:
        value["messages"] = [item.message for item in items]
    if statuses:
        value["statuses"] = list(statuses)
    return value


def _envelope(waba_id: str, entries: list[list[JSONDict]], field: str = "messages") -> JSONDict:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": waba_id, "changes": [{"value": value, "field": field} for value in values]}
            for values in entries
        ],
    }


def standby_update(
    phone_number_id: str,
    items: Sequence[InboundItem],
    *,
    display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
    waba_id: str = DEFAULT_WABA_ID,
) -> JSONDict:
    """`items` as a standby webhook: the same shape as `messages_update`, under the
    `standby` field, sent while another app (Meta's Business Agent) holds the
    conversation and ours only listens."""
    value = _change_value(phone_number_id, display_phone_number, items, (), status_contacts=False)
    return _envelope(waba_id, [[value]], field="standby")


def errors_update(
    phone_number_id: str,
    errors: Sequence[tuple[int, str]],
    *,
    display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
    waba_id: str = DEFAULT_WABA_ID,
) -> JSONDict:
    """A `messages` change carrying only errors (`value.errors`), as Meta sends when it
    could not hand us something (e.g. 131051, a message type it does not support)."""
    value = _change_value(phone_number_id, display_phone_number, (), (), status_contacts=False)
    value["errors"] = [
        {"code": code, "title": title, "message": title, "error_data": {"details": title}}
        for code, title in errors
    ]
    return _envelope(waba_id, [[value]])


def messages_update(
    phone_number_id: str,
    items: Sequence[InboundItem],
    *,
    display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
    waba_id: str = DEFAULT_WABA_ID,
) -> JSONDict:
    """A whole webhook body with one entry and one change holding all `items`.

    Contacts are de-duplicated; the `contacts` key is absent when every item is a
    system message.
    """
    value = _change_value(phone_number_id, display_phone_number, items, (), status_contacts=False)
    return _envelope(waba_id, [[value]])


def batch_update(
    phone_number_id: str,
    groups: Sequence[Sequence[InboundItem | JSONDict]],
    *,
    changes_per_entry: int = 2,
    display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
    waba_id: str = DEFAULT_WABA_ID,
) -> JSONDict:
    """A webhook body batching several changes over several entries.

    Each group becomes one change (its `InboundItem`s under `messages`, its status dicts
    from `status_item` under `statuses`); changes are packed `changes_per_entry` to an
    entry, so a handler reading only `entry[0].changes[0]` visibly misses items.
    """
    if changes_per_entry < 1:
        raise ValueError("changes_per_entry must be at least 1")
    values: list[JSONDict] = []
    for group in groups:
        items = [x for x in group if isinstance(x, InboundItem)]
        statuses = [x for x in group if not isinstance(x, InboundItem)]
        values.append(
            _change_value(
                phone_number_id, display_phone_number, items, statuses, status_contacts=False
            )
        )
    entries = [
        values[start : start + changes_per_entry]
        for start in range(0, len(values), changes_per_entry)
    ]
    return _envelope(waba_id, entries)


def statuses_update(
    phone_number_id: str,
    statuses: Sequence[JSONDict],
    *,
    with_contacts: bool = False,
    display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
    waba_id: str = DEFAULT_WABA_ID,
) -> JSONDict:
    """A webhook body carrying `statuses` (with a `contacts` array only if asked)."""
    value = _change_value(
        phone_number_id, display_phone_number, (), statuses, status_contacts=with_contacts
    )
    return _envelope(waba_id, [[value]])


def json_bytes(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as Meta posts it."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def signed_body(payload: JSONDict, secret: str) -> tuple[bytes, dict[str, str]]:
    """The exact bytes to post and the headers Meta sends with them, signature included."""
    body = json_bytes(payload)
    return body, {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign(body, secret),
    }
