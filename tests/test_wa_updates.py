"""Meta's webhook bodies → messages and statuses (bot/wa_updates.py), built with the
payload builders of bot/wa_payloads.py in both the classic and the 2026 shape (SPEC §5)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bot.fakes import payloads as wa
from bot.wa_updates import PayloadError, parse
from flows.runtime import Inbound, InboundKind

PHONE_ID = "109876543210"
OTHER_PHONE_ID = "555000111222"
JUAN = "5491155551234"
MARIA = "5215512345678"
BSUID = "AR.1502576394655843"
TS = 1767225600  # 2026-01-01T00:00:00Z


def only_message(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    parsed = parse(payload, PHONE_ID)
    assert parsed.skipped == 0
    assert parsed.statuses == []
    assert len(parsed.messages) == 1
    message = parsed.messages[0]
    return message.conversation_key, message.data


def as_inbound(data: dict[str, Any]) -> Inbound:
    """What the dispatcher makes of the stored form: the two modules must agree."""
    return Inbound.from_inbox(data)


# -- one message of each kind ----------------------------------------------------------


def test_classic_text() -> None:
    item = wa.inbound_text(JUAN, "Hola, ¿qué tal?", wamid="wamid.T1", name="Juan", timestamp=TS)
    key, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert key == JUAN
    assert data["wamid"] == "wamid.T1"
    assert data["wa_id"] == JUAN
    assert data["user_id"] is None
    assert data["name"] == "Juan"
    inbound = as_inbound(data)
    assert inbound.kind is InboundKind.TEXT
    assert inbound.text == "Hola, ¿qué tal?"
    assert inbound.timestamp.timestamp() == TS


def test_2026_text_with_phone_and_user_id_is_keyed_by_user_id() -> None:
    # The BSUID is the person; the phone comes and goes with Meta's cache.
    item = wa.inbound_text(JUAN, "hola", user_id=BSUID, username="juanp", name="Juan")
    key, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert key == f"u:{BSUID}"
    assert data["wa_id"] == JUAN
    assert data["user_id"] == BSUID
    assert data["name"] == "Juan"


def test_2026_text_without_phone_is_keyed_by_user_id() -> None:
    item = wa.inbound_text(None, "hola", user_id=BSUID, username="juanp")
    assert "from" not in item.message
    key, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert key == f"u:{BSUID}"
    assert data["wa_id"] is None
    assert data["user_id"] == BSUID
    assert as_inbound(data).text == "hola"


def test_button_reply_is_a_choice() -> None:
    item = wa.inbound_button_reply(JUAN, "faq", "Otra pregunta")
    _, data = only_message(wa.messages_update(PHONE_ID, [item]))
    inbound = as_inbound(data)
    assert inbound.kind is InboundKind.CHOICE
    assert inbound.choice_id == "faq"
    assert inbound.text == "Otra pregunta"


def test_list_reply_is_a_choice() -> None:
    item = wa.inbound_list_reply(JUAN, "faq:downgrade", "1. Bajar de plan", "Por qué no")
    _, data = only_message(wa.messages_update(PHONE_ID, [item]))
    inbound = as_inbound(data)
    assert inbound.kind is InboundKind.CHOICE
    assert inbound.choice_id == "faq:downgrade"
    assert inbound.text == "1. Bajar de plan"


def test_list_reply_in_2026_shape_without_phone() -> None:
    item = wa.inbound_list_reply(None, "human", "Hablar con persona", user_id=BSUID)
    key, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert key == f"u:{BSUID}"
    assert as_inbound(data).choice_id == "human"


def test_template_quick_reply_button_is_a_choice() -> None:
    item = wa.inbound_template_button(JUAN, "alerts:off", "No más alertas")
    _, data = only_message(wa.messages_update(PHONE_ID, [item]))
    inbound = as_inbound(data)
    assert inbound.kind is InboundKind.CHOICE
    assert inbound.choice_id == "alerts:off"
    assert inbound.text == "No más alertas"


@pytest.mark.parametrize(
    ("type_", "body"),
    [
        ("sticker", {"mime_type": "image/webp", "sha256": "abc", "id": "1", "animated": False}),
        ("location", {"latitude": -34.6, "longitude": -58.4, "name": "Obelisco"}),
        # With words under it, a photo is read as text (test_a_caption_is_read_as_text…).
        ("image", {"mime_type": "image/jpeg", "sha256": "abc", "id": "2"}),
        ("audio", {"mime_type": "audio/ogg", "id": "3", "voice": True}),
        ("unsupported", {"type": "poll"}),
    ],
)
def test_media_and_other_types_are_unsupported(type_: str, body: dict[str, Any]) -> None:
    item = wa.inbound_other(JUAN, type_, body)
    key, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert key == JUAN
    assert data["type"] == type_
    assert as_inbound(data).kind is InboundKind.UNSUPPORTED


def test_reaction() -> None:
    item = wa.inbound_other(JUAN, "reaction", {"message_id": "wamid.OUT", "emoji": "👍"})
    _, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert as_inbound(data).kind is InboundKind.REACTION


@pytest.mark.parametrize(
    ("legacy", "system_type"),
    [(False, "user_changed_number"), (True, "customer_changed_number")],
)
def test_changed_number_system_message(legacy: bool, system_type: str) -> None:
    new_number = "5491166667777"
    item = wa.inbound_system_changed_number(JUAN, new_number, legacy=legacy)
    payload = wa.messages_update(PHONE_ID, [item])
    assert "contacts" not in payload["entry"][0]["changes"][0]["value"]
    key, data = only_message(payload)
    assert key == JUAN  # the conversation of the old number
    inbound = as_inbound(data)
    assert inbound.kind is InboundKind.SYSTEM
    assert inbound.system_type == system_type
    assert inbound.new_wa_id == new_number


def test_a_number_change_carries_the_new_bsuid_and_is_keyed_by_the_previous_one() -> None:
    item = wa.inbound_system_changed_number(
        JUAN, "5491166667777", new_user_id="AR.n3wK3y9", previous_user_id="AR.0ldK3y1"
    )
    key, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert key == "u:AR.0ldK3y1"  # the person as they were until the change
    inbound = as_inbound(data)
    assert (inbound.new_wa_id, inbound.new_user_id) == ("5491166667777", "AR.n3wK3y9")


def test_a_bsuid_change_without_a_phone() -> None:
    item = wa.inbound_system_changed_user_id("AR.0ldK3y1", "AR.n3wK3y9")
    assert "from" not in item.message
    key, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert key == "u:AR.0ldK3y1"
    inbound = as_inbound(data)
    assert inbound.system_type == "user_changed_user_id"
    assert (inbound.new_wa_id, inbound.new_user_id) == (None, "AR.n3wK3y9")


# -- batches ---------------------------------------------------------------------------


def test_every_message_and_status_of_a_batch_is_read_in_order() -> None:
    texts = [wa.inbound_text(JUAN, f"mensaje {i}", wamid=f"wamid.M{i}") for i in range(5)]
    statuses = [
        wa.status_item(f"wamid.S{i}", "delivered", MARIA, biz_opaque_callback_data=str(i))
        for i in range(3)
    ]
    groups: list[list[wa.InboundItem | dict[str, Any]]] = [
        [texts[0], texts[1]],
        [statuses[0]],
        [texts[2], statuses[1]],
        [wa.inbound_list_reply(MARIA, "faq", "Preguntas", wamid="wamid.M_list")],
        [texts[3], texts[4], statuses[2]],
    ]
    payload = wa.batch_update(PHONE_ID, groups, changes_per_entry=2)
    assert len(payload["entry"]) == 3

    parsed = parse(payload, PHONE_ID)

    assert [m.wamid for m in parsed.messages] == [
        "wamid.M0",
        "wamid.M1",
        "wamid.M2",
        "wamid.M_list",
        "wamid.M3",
        "wamid.M4",
    ]
    assert [s.wamid for s in parsed.statuses] == ["wamid.S0", "wamid.S1", "wamid.S2"]
    assert [s.outbox_id for s in parsed.statuses] == [0, 1, 2]
    assert parsed.skipped == 0
    assert parsed.foreign_phone_ids == []


def test_each_sender_of_a_change_gets_their_own_contact() -> None:
    items = [
        wa.inbound_text(JUAN, "hola", name="Juan"),
        wa.inbound_text(MARIA, "hola", name="María", user_id="MX.1"),
        wa.inbound_text(None, "hola", name="Ana", user_id=BSUID),
    ]
    parsed = parse(wa.messages_update(PHONE_ID, items), PHONE_ID)
    got = [(m.conversation_key, m.data["name"], m.data["user_id"]) for m in parsed.messages]
    assert got == [(JUAN, "Juan", None), ("u:MX.1", "María", "MX.1"), (f"u:{BSUID}", "Ana", BSUID)]


def test_a_system_message_does_not_borrow_another_senders_contact() -> None:
    # System messages come without a contact; batched with Juan's text, the change's only
    # contact is Juan's, and it must not be given to María's number change.
    items = [
        wa.inbound_text(JUAN, "hola", name="Juan", user_id=BSUID),
        wa.inbound_system_changed_number(MARIA, "5215599999999"),
    ]
    parsed = parse(wa.messages_update(PHONE_ID, items), PHONE_ID)
    system = parsed.messages[1]
    assert system.conversation_key == MARIA
    assert system.data["name"] != "Juan"
    assert system.data["user_id"] != BSUID


def test_changes_for_another_number_are_skipped_and_reported() -> None:
    ours = wa.messages_update(PHONE_ID, [wa.inbound_text(JUAN, "hola", wamid="wamid.OURS")])
    theirs = wa.messages_update(
        OTHER_PHONE_ID, [wa.inbound_text(MARIA, "hola", wamid="wamid.THEIRS")]
    )
    payload = copy.deepcopy(ours)
    payload["entry"].append(theirs["entry"][0])

    parsed = parse(payload, PHONE_ID)

    assert [m.wamid for m in parsed.messages] == ["wamid.OURS"]
    assert parsed.foreign_phone_ids == [OTHER_PHONE_ID]


# -- statuses --------------------------------------------------------------------------


@pytest.mark.parametrize("with_contacts", [False, True])
@pytest.mark.parametrize("state", ["sent", "delivered", "read"])
def test_status_with_our_outbox_id(state: str, with_contacts: bool) -> None:
    item = wa.status_item("wamid.OUT1", state, JUAN, biz_opaque_callback_data="12345", timestamp=TS)
    parsed = parse(wa.statuses_update(PHONE_ID, [item], with_contacts=with_contacts), PHONE_ID)
    assert parsed.messages == []
    assert parsed.skipped == 0
    (status,) = parsed.statuses
    assert status.wamid == "wamid.OUT1"
    assert status.status == state
    assert status.outbox_id == 12345
    assert status.recipient == JUAN
    assert status.timestamp == TS
    assert status.error_code is None


@pytest.mark.parametrize("opaque", [None, "not-ours", "", "-5", "²"])
def test_status_without_a_usable_outbox_id(opaque: str | None) -> None:
    item = wa.status_item("wamid.OUT2", "delivered", JUAN, biz_opaque_callback_data=opaque)
    (status,) = parse(wa.statuses_update(PHONE_ID, [item]), PHONE_ID).statuses
    assert status.wamid == "wamid.OUT2"
    assert status.outbox_id is None


def test_outbox_id_beyond_a_bigint_is_ignored() -> None:
    item = wa.status_item("wamid.OUT3", "sent", JUAN, biz_opaque_callback_data="9" * 30)
    (status,) = parse(wa.statuses_update(PHONE_ID, [item]), PHONE_ID).statuses
    assert status.outbox_id is None


@pytest.mark.parametrize("code", [131026, 131047, 131056, 132001])
def test_failed_status_carries_the_error_code(code: int) -> None:
    item = wa.status_item(
        "wamid.OUT4",
        "failed",
        JUAN,
        biz_opaque_callback_data="7",
        errors=[wa.error_object(code)],
    )
    (status,) = parse(wa.statuses_update(PHONE_ID, [item]), PHONE_ID).statuses
    assert status.status == "failed"
    assert status.outbox_id == 7
    assert status.error_code == code
    assert status.error_title == wa.meta_error(code).title


def test_status_to_a_username_only_user() -> None:
    item = wa.status_item("wamid.OUT5", "read", None, recipient_user_id=BSUID)
    (status,) = parse(wa.statuses_update(PHONE_ID, [item], with_contacts=True), PHONE_ID).statuses
    assert status.recipient == BSUID


# -- malformed bodies ------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "whatsapp_business_account",
        {},
        {"object": "page", "entry": []},
        {"object": "whatsapp_business_account"},
        {"object": "whatsapp_business_account", "entry": {"changes": []}},
        {"object": "whatsapp_business_account", "entry": "x"},
    ],
)
def test_not_an_update_is_a_payload_error(payload: Any) -> None:
    with pytest.raises(PayloadError):
        parse(payload, PHONE_ID)


def test_broken_entries_and_changes_are_counted_and_the_rest_is_read() -> None:
    good = wa.messages_update(PHONE_ID, [wa.inbound_text(JUAN, "hola", wamid="wamid.GOOD")])
    payload = copy.deepcopy(good)
    payload["entry"] = [
        "not an entry",
        {"id": "WABA", "changes": "not a list"},
        {"id": "WABA", "changes": [None, {"field": "messages", "value": "x"}]},
        *good["entry"],
    ]
    parsed = parse(payload, PHONE_ID)
    assert [m.wamid for m in parsed.messages] == ["wamid.GOOD"]
    assert parsed.skipped == 4


def test_messages_without_id_or_sender_are_skipped_not_fatal() -> None:
    without_id = wa.inbound_text(JUAN, "sin id")
    del without_id.message["id"]
    without_sender = wa.inbound_other(JUAN, "text", {"body": "de nadie"})
    del without_sender.message["from"]
    good = wa.inbound_text(JUAN, "hola", wamid="wamid.GOOD")
    payload = wa.messages_update(PHONE_ID, [without_id, good])
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"].insert(1, without_sender.message)
    value["messages"].append("not a message")
    # The sender without `from` has no contact to fall back on either.
    value["contacts"] = []

    parsed = parse(payload, PHONE_ID)

    assert [m.wamid for m in parsed.messages] == ["wamid.GOOD"]
    assert parsed.skipped == 3


@pytest.mark.parametrize(
    "status",
    [
        {"status": "delivered", "recipient_id": JUAN},  # no id
        {"id": "wamid.X", "status": "deleted", "recipient_id": JUAN},  # unknown status
        {"id": "wamid.X", "recipient_id": JUAN},
        "delivered",
    ],
)
def test_unusable_statuses_are_skipped(status: Any) -> None:
    payload = wa.statuses_update(PHONE_ID, [wa.status_item("wamid.OK", "sent", JUAN)])
    payload["entry"][0]["changes"][0]["value"]["statuses"].insert(0, status)
    parsed = parse(payload, PHONE_ID)
    assert [s.wamid for s in parsed.statuses] == ["wamid.OK"]
    assert parsed.skipped == 1


@pytest.mark.parametrize(
    "mutation",
    [
        lambda m: m.update(text="hola"),
        lambda m: m.update(text={"body": 5}),
        lambda m: m.update(type="interactive", interactive={"button_reply": "x"}),
        lambda m: m.update(type="interactive", interactive={"list_reply": {"id": 5}}),
        lambda m: m.update(type="button", button={"payload": None}),
        lambda m: m.update(type="system", system="x"),
        lambda m: m.update(timestamp={"x": 1}),
        lambda m: m.update(type=None),
        lambda m: m.update({"from": 5491155551234}),
    ],
)
def test_odd_field_types_never_raise_anything_but_payload_error(mutation: Any) -> None:
    item = wa.inbound_text(JUAN, "hola")
    mutation(item.message)
    parsed = parse(wa.messages_update(PHONE_ID, [item]), PHONE_ID)
    assert len(parsed.messages) + parsed.skipped == 1
    for message in parsed.messages:
        assert as_inbound(message.data).kind in set(InboundKind)


def test_odd_status_fields_never_raise() -> None:
    item = wa.status_item("wamid.ODD", "failed", JUAN, errors=[{"code": "131026"}])
    item["timestamp"] = "²"
    item["biz_opaque_callback_data"] = {"id": 1}
    (status,) = parse(wa.statuses_update(PHONE_ID, [item]), PHONE_ID).statuses
    assert status.timestamp is None
    assert status.outbox_id is None
    assert status.error_code is None


@pytest.mark.parametrize("timestamp", ["hace un rato", "²", "", "1.5"])
def test_a_message_timestamp_that_is_not_unix_seconds_is_dropped(timestamp: str) -> None:
    # Stored as is, it would make every later attempt to process the message fail.
    item = wa.inbound_text(JUAN, "hola")
    item.message["timestamp"] = timestamp
    _, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert data["timestamp"] is None
    assert as_inbound(data).text == "hola"


# -- only the messages field is conversation input ---------------------------------------


def test_a_standby_change_is_not_conversation_input() -> None:
    """Standby webhooks have the messages shape but belong to a conversation another app
    (Meta's Business Agent) holds; answering one would take it over."""
    standby = wa.standby_update(PHONE_ID, [wa.inbound_text(MARIA, "hola")])
    payload = wa.messages_update(PHONE_ID, [wa.inbound_text(JUAN, "hola")])
    payload["entry"][0]["changes"] += standby["entry"][0]["changes"]
    parsed = parse(payload, PHONE_ID)
    assert [m.conversation_key for m in parsed.messages] == [JUAN]
    assert parsed.other_fields == ["standby"]


def test_a_change_without_a_field_is_not_read_as_messages() -> None:
    payload = wa.messages_update(PHONE_ID, [wa.inbound_text(JUAN, "hola")])
    del payload["entry"][0]["changes"][0]["field"]
    parsed = parse(payload, PHONE_ID)
    assert parsed.messages == [] and parsed.other_fields == ["None"]


def test_errors_meta_reports_in_a_change_are_read() -> None:
    parsed = parse(wa.errors_update(PHONE_ID, [(131051, "Message type unknown")]), PHONE_ID)
    assert [(e.code, e.title) for e in parsed.errors] == [(131051, "Message type unknown")]
    assert parsed.messages == [] and parsed.statuses == []


# -- welcome, captions, edits and deletions ----------------------------------------------


def test_request_welcome_is_a_welcome() -> None:
    _, data = only_message(wa.messages_update(PHONE_ID, [wa.inbound_welcome(JUAN)]))
    assert as_inbound(data).kind is InboundKind.WELCOME


@pytest.mark.parametrize("kind", ["image", "video", "document"])
def test_a_caption_is_read_as_text_and_the_media_noted(kind: str) -> None:
    item = wa.inbound_media(JUAN, kind, "quiero subir de plan")
    inbound = as_inbound(only_message(wa.messages_update(PHONE_ID, [item]))[1])
    assert (inbound.kind, inbound.text, inbound.media) == (
        InboundKind.TEXT,
        "quiero subir de plan",
        kind,
    )


@pytest.mark.parametrize("caption", [None, "", "   "])
def test_media_without_words_is_unsupported(caption: str | None) -> None:
    item = wa.inbound_media(JUAN, "image", caption)
    inbound = as_inbound(only_message(wa.messages_update(PHONE_ID, [item]))[1])
    assert inbound.kind is InboundKind.UNSUPPORTED


def test_an_edit_is_the_new_text_and_names_what_it_replaces() -> None:
    item = wa.inbound_edit(JUAN, "wamid.ORIGINAL", "perdón, quise decir backups")
    _, data = only_message(wa.messages_update(PHONE_ID, [item]))
    assert data["replaces"] == "wamid.ORIGINAL"
    inbound = as_inbound(data)
    assert (inbound.kind, inbound.text) == (InboundKind.TEXT, "perdón, quise decir backups")


def test_a_revoke_is_not_answered_and_names_what_it_deletes() -> None:
    _, data = only_message(wa.messages_update(PHONE_ID, [wa.inbound_revoke(JUAN, "wamid.O")]))
    assert data["replaces"] == "wamid.O"
    assert as_inbound(data).kind is InboundKind.REVOKED
