"""Transfers, property-based (hypothesis): no two messages that differ in any way ever
make a pair, whatever the text; and what a customer who is neither holder is told never
carries another account's data.

The pairing runs against the real PostgreSQL (store/transfers.py, one transaction per
example, rolled back); the replies through the conversation rules in process, the billing
system a dict of three accounts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.billing import Client, ClientLookup, Found, Service
from flows.conversation import handle
from flows.runtime import ConversationView, Deps, Identity, IdentityStatus
from store import transfers
from tests.test_flows_menu import (
    CATALOG,
    NOW,
    PANEL,
    TTL,
    FakeAlerts,
    Matcher,
    text_in,
)
from tests.test_transfer import message

JUAN = Client("c1", "Juan Perez", "juan@example.com", verified=True, phone="+54 11 5555-1234")
MARIA = Client("c2", "María González", "maria@example.com", verified=True)
CARLA = Client("c5", "Carla Otra", "carla@example.com", verified=True)
SECRETS = ("juanperez.com.ar", "+54 11 5555-1234", "5491155551234", "s1", "Hosting Inicial")


def mutations(text: str) -> st.SearchStrategy[str]:
    """The text with one small change: a character added, dropped or replaced, a space
    doubled, a letter's case or accent changed, a trailing newline."""
    at = st.integers(min_value=0, max_value=max(0, len(text) - 1))
    char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
    return st.one_of(
        st.tuples(at, char).map(lambda p: text[: p[0]] + p[1] + text[p[0] :]),
        at.map(lambda i: text[:i] + text[i + 1 :]),
        st.tuples(at, char).map(lambda p: text[: p[0]] + p[1] + text[p[0] + 1 :]),
        st.just(text.replace(" ", "  ", 1)),
        st.just(text + "\n"),
        st.just(text.replace("está", "esta")),
        st.just(text.replace("Soy", "soy")),
    ).filter(lambda changed: changed != text)


async def pair(database_url: str, first: str, second: str) -> bool:
    """Whether `first` (origin holder's) and `second` (destination holder's) match."""
    conn = await asyncpg.connect(database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            window = timedelta(hours=72)
            await transfers.record(conn, _request(1, "c1", "origin", first), window)
            found = await transfers.record(conn, _request(2, "c2", "destination", second), window)
            return found.pair_key is not None
        finally:
            await tx.rollback()
    finally:
        await conn.close()


def _request(conversation: int, client: str, role: str, text: str) -> transfers.Request:
    return transfers.Request(
        conversation_id=conversation, client_id=client, role=role, origin_client_id="c1",
        destination_client_id="c2", service_label="juanperez.com.ar", service_id="s1",
        text=text,
    )  # fmt: skip


# Any text a message can carry: the inbox drops NUL before anything reads it (PostgreSQL's
# text cannot hold one), so none reaches a transfer.
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=300,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_near_identical_messages_never_pair(database_url: str, data: st.DataObject) -> None:
    base = data.draw(st.one_of(st.just(message()), TEXT), label="first")
    near = data.draw(mutations(base), label="second")
    assert asyncio.run(pair(database_url, base, near)) is False


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.just(message()), TEXT))
def test_identical_messages_pair(database_url: str, text: str) -> None:
    """The control: the same text from the two holders is a pair (so the test above
    could fail)."""
    assert asyncio.run(pair(database_url, text, text)) is True


class Accounts:
    """The billing system as the flows read it: Juan, María and Carla."""

    clients: Sequence[Client] = (JUAN, MARIA, CARLA)

    async def find_client_by_phone(self, wa_id: str) -> ClientLookup:
        return ClientLookup(Found.ONE, CARLA)

    async def get_client(self, client_id: str) -> Client | None:
        return next((c for c in self.clients if c.id == client_id), None)

    async def find_client_by_email(self, email: str) -> Client | None:
        return next((c for c in self.clients if c.email == email.strip().lower()), None)

    async def list_services(self, client_id: str) -> list[Service]:
        return []


NAMES = st.sampled_from(["Juan Perez", "María González", "Carla Otra", "Ana", "X"])
EMAILS = st.sampled_from(
    ["juan@example.com", "maria@example.com", "nadie@example.com", "JUAN@example.com"]
)
SERVICES = st.sampled_from(["juanperez.com.ar", "otro.com", "s1", "mi radio"])


@settings(max_examples=80, deadline=None)
@given(
    name=NAMES, email=EMAILS, service=SERVICES, to_name=NAMES, to_email=EMAILS,
    noise=st.sampled_from(["", " ", "  ", "\n", "!"]),
)  # fmt: skip
def test_a_non_holder_is_told_nothing_of_other_accounts(
    *, name: str, email: str, service: str, to_name: str, to_email: str, noise: str
) -> None:
    """Carla writes transfer messages naming anyone: whatever she is told holds nothing
    of Juan's account she did not write herself."""
    text = message(service, name=name, email=email, to_name=to_name, to_email=to_email) + noise
    deps = Deps(
        catalog=CATALOG, matcher=Matcher(CATALOG.words("words.negations")), billing=Accounts(),
        alerts=FakeAlerts(), panel_details_url=PANEL, session_ttl=TTL,
    )  # fmt: skip
    conv = ConversationView(state="menu.main", context={}, updated_at=NOW, wa_id="5491144440000")
    identity = Identity(IdentityStatus.IDENTIFIED, CARLA)
    turn = asyncio.run(handle(conv, text_in(text), identity, deps, NOW))
    told = "\n".join(getattr(r.message, "body", "") for r in turn.replies)
    for secret in SECRETS:
        if secret not in text:
            assert secret not in told, (secret, told)
    assert not turn.effects  # Carla is neither holder: nothing recorded, nothing moved
