"""Meta's webhook payload → the messages and statuses it carries.

We parse the dict ourselves rather than through pywa: pywa reads only the first item of
a batch and expects the 2026 shape. Here every entry, change, message and status is
read, in both shapes (SPEC §5):

- classic: `contacts[].wa_id`, `messages[].from` = the phone;
- 2026: `contacts[].user_id` (business-scoped user id) is added, and for users with a
  username the phone (`wa_id`, `from`) may be absent; the message then names its sender
  with `from_user_id`. Status updates may come without `contacts`.

The result is plain data: the handler stores it, the dispatcher acts on it later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Message types we read; anything else is answered with "I can only read text".
_CHOICE_TYPES = {"interactive", "button"}
# Media that can carry a caption.
_CAPTIONED = {"image", "video", "document"}
_STATUS_ORDER = ("sent", "delivered", "read", "failed")


class PayloadError(ValueError):
    """The body is JSON but not a WhatsApp Business Account update."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    wamid: str
    conversation_key: str
    data: dict[str, Any]  # the normalised form kept in the inbox (flows.runtime.Inbound)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    wamid: str
    status: str
    outbox_id: int | None  # from biz_opaque_callback_data, our own id
    attempt: int | None  # which send of that row (also ours)
    recipient: str | None
    timestamp: int | None
    error_code: int | None
    error_title: str | None


@dataclass(frozen=True, slots=True)
class ReportedError:
    """An error Meta reports about the webhook itself (`value.errors`), e.g. a message it
    could not deliver to us (131051, unsupported type)."""

    code: int | None
    title: str


@dataclass(slots=True)
class ParsedUpdate:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    foreign_phone_ids: list[str] = field(default_factory=list)
    # Changes of another field than `messages` (standby, messaging_handovers, account and
    # template updates…): not conversation input.
    other_fields: list[str] = field(default_factory=list)
    errors: list[ReportedError] = field(default_factory=list)
    skipped: int = 0  # items without the fields we need (logged by the caller)


def conversation_key(wa_id: str | None, user_id: str | None) -> str | None:
    """A new person's conversation key: their business-scoped user id (stable since
    WhatsApp's 2026 usernames) when the update carries it, else their phone. The database
    maps every id a person has used to their one conversation (migration 012)."""
    if user_id:
        return f"u:{user_id}"
    if wa_id:
        return wa_id
    return None


def parse(payload: Any, phone_number_id: str) -> ParsedUpdate:
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        raise PayloadError("not a whatsapp_business_account update")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise PayloadError("'entry' must be a list")
    out = ParsedUpdate()
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            out.skipped += 1
            continue
        for change in changes:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                out.skipped += 1
                continue
            # Only `messages` is ours to answer. A `standby` change has the same shape but
            # is a conversation another app (Meta's Business Agent) is handling: replying
            # would take it over (developers.facebook.com/documentation/business-messaging/
            # whatsapp/webhooks/reference/standby).
            changed = change.get("field")
            if changed != "messages":
                out.other_fields.append(str(changed))
                continue
            metadata = value.get("metadata")
            their_phone_id = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
            if phone_number_id and their_phone_id != phone_number_id:
                out.foreign_phone_ids.append(str(their_phone_id))
                continue
            _parse_value(value, out)
    return out


def _parse_value(value: dict[str, Any], out: ParsedUpdate) -> None:
    for error in _list(value.get("errors")):
        if isinstance(error, dict):
            code = error.get("code")
            title = _str(error.get("title")) or _str(error.get("message")) or ""
            number = code if isinstance(code, int) and not isinstance(code, bool) else None
            out.errors.append(ReportedError(number, title))
    contacts = [c for c in _list(value.get("contacts")) if isinstance(c, dict)]
    for msg in _list(value.get("messages")):
        item = _message(msg, contacts) if isinstance(msg, dict) else None
        if item is None:
            out.skipped += 1
        else:
            out.messages.append(item)
    for status in _list(value.get("statuses")):
        parsed = _status(status) if isinstance(status, dict) else None
        if parsed is None:
            out.skipped += 1
        else:
            out.statuses.append(parsed)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _contact_for(msg: dict[str, Any], contacts: list[dict[str, Any]]) -> dict[str, Any]:
    sender_phone = msg.get("from")
    sender_user = msg.get("from_user_id")
    for c in contacts:
        if (sender_phone and c.get("wa_id") == sender_phone) or (
            sender_user and c.get("user_id") == sender_user
        ):
            return c
    # One contact and one sender: Meta pairs them even when the keys differ in shape, but
    # never with a contact that names someone else (a batched system message has none).
    if len(contacts) == 1 and not _names_another(contacts[0], sender_phone, sender_user):
        return contacts[0]
    return {}


def _names_another(contact: dict[str, Any], sender_phone: Any, sender_user: Any) -> bool:
    wa_id, user_id = contact.get("wa_id"), contact.get("user_id")
    return bool(
        (sender_phone and wa_id and wa_id != sender_phone)
        or (sender_user and user_id and user_id != sender_user)
    )


def _message(msg: dict[str, Any], contacts: list[dict[str, Any]]) -> InboundMessage | None:
    wamid = msg.get("id")
    if not isinstance(wamid, str) or not wamid:
        return None
    contact = _contact_for(msg, contacts)
    wa_id = _str(msg.get("from")) or _str(contact.get("wa_id"))
    user_id = _str(msg.get("from_user_id")) or _str(contact.get("user_id"))
    system = msg.get("system")
    if isinstance(system, dict) and _str(system.get("previous_user_id")):
        # A changed id is announced under the ids the person had until then.
        user_id = _str(system.get("previous_user_id"))
    key = conversation_key(wa_id, user_id)
    if key is None:
        return None
    profile = contact.get("profile") if isinstance(contact.get("profile"), dict) else {}
    mtype = _str(msg.get("type")) or "unknown"
    data: dict[str, Any] = {
        "wamid": wamid,
        "type": mtype,
        "wa_id": wa_id,
        "user_id": user_id,
        "name": _str(profile.get("name")) if profile else None,
        # Unix seconds as a digit string, or None: Inbound.from_inbox reads it with int().
        "timestamp": _digits(msg.get("timestamp")),
        "raw": msg,
    }
    data.update(_content(mtype, msg))
    return InboundMessage(wamid=wamid, conversation_key=key, data=data)


def _content(mtype: str, msg: dict[str, Any]) -> dict[str, Any]:
    if mtype == "text":
        body = msg.get("text", {}).get("body") if isinstance(msg.get("text"), dict) else None
        return {"kind": "text", "text": body if isinstance(body, str) else ""}
    if mtype in _CHOICE_TYPES:
        reply = _choice(msg)
        if reply is not None:
            choice_id, title = reply
            context = msg.get("context") if isinstance(msg.get("context"), dict) else {}
            assert isinstance(context, dict)
            # The business message whose button or row was tapped.
            return {
                "kind": "choice",
                "choice_id": choice_id,
                "text": title,
                "context_id": _str(context.get("id")),
            }
    if mtype in _CAPTIONED:
        # A photo or a file with words under it: the words are read, the file is not.
        media = msg.get(mtype) if isinstance(msg.get(mtype), dict) else {}
        assert isinstance(media, dict)
        caption = _str(media.get("caption"))
        if caption and caption.strip():
            return {"kind": "text", "text": caption, "media": mtype}
    if mtype == "request_welcome":
        # The user opened the chat with us for the first time (developers.facebook.com/
        # documentation/business-messaging/whatsapp/webhooks/reference/messages).
        return {"kind": "welcome"}
    if mtype == "edit":
        # The user edited an earlier message: what it says now is read as a new message,
        # and the original, if not answered yet, is not (store/inbox.py).
        edit = msg.get("edit") if isinstance(msg.get("edit"), dict) else {}
        assert isinstance(edit, dict)
        inner = edit.get("message") if isinstance(edit.get("message"), dict) else {}
        assert isinstance(inner, dict)
        content = _content(_str(inner.get("type")) or "unknown", inner)
        return {**content, "replaces": _str(edit.get("original_message_id"))}
    if mtype == "revoke":
        # The user deleted an earlier message: nothing to answer, and the original, if
        # not answered yet, is not.
        revoke = msg.get("revoke") if isinstance(msg.get("revoke"), dict) else {}
        assert isinstance(revoke, dict)
        return {"kind": "revoked", "replaces": _str(revoke.get("original_message_id"))}
    if mtype == "reaction":
        return {"kind": "reaction"}
    if mtype == "system":
        system = msg.get("system") if isinstance(msg.get("system"), dict) else {}
        assert isinstance(system, dict)
        return {
            "kind": "system",
            "system_type": _str(system.get("type")),
            # New payloads carry `wa_id`, older ones `new_wa_id`.
            "new_wa_id": _str(system.get("wa_id")) or _str(system.get("new_wa_id")),
            # A number change makes a new BSUID too (`user_changed_number`), and a BSUID
            # can change alone (`user_changed_user_id`, no phone at all).
            "new_user_id": _str(system.get("user_id")),
        }
    return {"kind": "unsupported"}


def _choice(msg: dict[str, Any]) -> tuple[str, str] | None:
    interactive = msg.get("interactive")
    if isinstance(interactive, dict):
        for key in ("button_reply", "list_reply"):
            reply = interactive.get(key)
            if isinstance(reply, dict) and isinstance(reply.get("id"), str):
                return reply["id"], _str(reply.get("title")) or ""
    button = msg.get("button")  # a quick-reply button of a template
    if isinstance(button, dict):
        payload = _str(button.get("payload")) or _str(button.get("text"))
        if payload:
            return payload, _str(button.get("text")) or ""
    return None


def _status(status: dict[str, Any]) -> StatusUpdate | None:
    wamid = _str(status.get("id"))
    state = _str(status.get("status"))
    if not wamid or state not in _STATUS_ORDER:
        return None
    # Our "<outbox id>.<attempt>" (a bare id from before attempts were numbered).
    opaque = _str(status.get("biz_opaque_callback_data")) or ""
    row, _, attempt = opaque.partition(".")
    outbox_id = _number(row) if len(row) < 19 else None
    attempt_number = _number(attempt) if outbox_id is not None and len(attempt) < 9 else None
    errors = _list(status.get("errors"))
    first_error = errors[0] if errors and isinstance(errors[0], dict) else {}
    code = first_error.get("code")
    ts = _str(status.get("timestamp"))
    return StatusUpdate(
        wamid=wamid,
        status=state,
        outbox_id=outbox_id,
        attempt=attempt_number,
        recipient=_str(status.get("recipient_id")) or _str(status.get("recipient_user_id")),
        timestamp=_number(ts),
        error_code=code if isinstance(code, int) else None,
        error_title=_str(first_error.get("title")) or _str(first_error.get("message")),
    )


def _digits(value: Any) -> str | None:
    text = _str(value)
    return text if _number(text) is not None else None


def _number(text: str | None) -> int | None:
    # ASCII digits only: str.isdigit() also accepts "²", which int() rejects.
    return int(text) if text and text.isascii() and text.isdigit() else None


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
