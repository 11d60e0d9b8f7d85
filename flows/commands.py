"""What a flow asks to be done: commands. A step never changes anything itself; it
returns commands, and the dispatcher stores them in the same transaction as the turn.

Two kinds, by where the work happens:

- **Local** commands are writes to our own database (a staff task, an alert switch, a
  number change, a message into another conversation). They are applied inside the
  turn's transaction, so they happen exactly when the turn does.
- **Billing** commands ask the billing system to change something (place an upgrade,
  request a cancellation, stop a domain's renewal, transfer a service). A call can take
  seconds and its answer can be lost, so they are queued with the turn and carried out
  after it commits by the command worker (`bot/commands.py`), outside any conversation
  lock. Each carries an idempotency key the flow made and keeps in its context: the same
  key never acts twice, and the billing backends treat it as their request id. The
  outcome — done, refused, unknown, unavailable — comes back to the flow that asked
  (`reply_to`) as a system message in its conversation's inbox, handled in order like
  anything the customer writes.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from flows.billing import CancellationKind

# -- local commands ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Escalate:
    """Open a staff task. Without a `key`, one unresolved task per conversation and
    reason (asking twice for a person is one request); with a key, one per key (a flow's
    task about one thing, e.g. an upgrade staff must do by hand)."""

    reason: str
    summary: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None
    # How soon staff should look (store.queue.PRIORITIES): money that may have moved is
    # "high"; most requests are "normal".
    priority: str = "normal"


@dataclass(frozen=True, slots=True)
class SetAlerts:
    """Switch a customer's WhatsApp alerts (flows.alerts); a security alert is sent
    whatever they say, so it is never switched.

    Without `type`: every alert on or off at once; all on also clears the per-type
    switches (the customer wants everything back). With `type` (one of
    flows.alerts.SWITCHABLE): that alert alone; turned on while all were off, it is the
    only one on."""

    client_id: str
    enabled: bool
    type: str | None = None


@dataclass(frozen=True, slots=True)
class NumberChanged:
    """WhatsApp says this user's number or business-scoped user id changed: the
    conversation follows the new ids (a number change brings a new BSUID too; a BSUID
    can change alone, with no phone) and, for a known customer, a new number stays tied
    to their account."""

    old_wa_id: str
    new_wa_id: str | None
    client_id: str | None
    new_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    """Make another conversation hear something: a system message into its inbox, handled
    in that conversation's order by `flow` there (`Step.on_signal`). The key makes it
    arrive once however often the turn that sends it is retried."""

    conversation_id: int
    flow: str
    name: str
    key: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestTransfer:
    """One holder's transfer message (flows.transfer), recorded in the turn's
    transaction; when the other holder's byte-identical message is waiting, the pair is
    matched there and the transfer command queued (for the origin holder's conversation,
    which tells the other one the outcome)."""

    client_id: str
    role: str  # origin | destination
    origin_client_id: str
    destination_client_id: str
    service_label: str
    service_id: str | None  # known on the origin holder's side
    text: str
    window_seconds: int  # how long it waits for the other holder's


@dataclass(frozen=True, slots=True)
class TransferDecided:
    """What a matched pair's transfer came to, recorded for staff."""

    pair_key: str
    outcome: str


@dataclass(frozen=True, slots=True)
class BackToBot:
    """The customer typed `menu` while a person had the conversation: the bot has it
    again, and staff see that on the conversation's items."""


LocalCommand = (
    Escalate | SetAlerts | NumberChanged | Notify | RequestTransfer | TransferDecided | BackToBot
)

# -- billing commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceUpgrade:
    KIND: ClassVar[str] = "place_upgrade"
    key: str
    client_id: str
    service_id: str
    product_id: str
    cycle: str
    today: date  # the day the customer was quoted: the amount depends on it
    reply_to: str = ""  # the flow told the outcome; set by the runtime


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCancellation:
    KIND: ClassVar[str] = "request_cancellation"
    key: str
    client_id: str
    service_id: str
    kind: CancellationKind
    reason: str
    reply_to: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StopDomainRenewal:
    KIND: ClassVar[str] = "stop_domain_renewal"
    key: str
    client_id: str
    domain_id: str
    reply_to: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferService:
    KIND: ClassVar[str] = "transfer_service"
    key: str
    client_id: str
    service_id: str
    to_client_id: str
    reply_to: str = ""
    # A transfer matched from two holders' messages: the destination holder's
    # conversation (told the outcome too) and the service as the messages name it.
    notify_conversation: int | None = None
    service_label: str = ""


BillingCommand = PlaceUpgrade | RequestCancellation | StopDomainRenewal | TransferService
Command = LocalCommand | BillingCommand

BILLING_COMMANDS: dict[str, type[BillingCommand]] = {
    cls.KIND: cls for cls in (PlaceUpgrade, RequestCancellation, StopDomainRenewal, TransferService)
}


def command_params(command: BillingCommand) -> dict[str, Any]:
    """The stored form of a billing command's fields (JSON: dates ISO, enums by value)."""
    return {f.name: _to_json(getattr(command, f.name)) for f in dataclasses.fields(command)}


def command_from(kind: str, params: Mapping[str, Any]) -> BillingCommand:
    """Inverse of `command_params`; KeyError for an unknown kind, TypeError/ValueError
    for params that do not fit it."""
    cls = BILLING_COMMANDS[kind]
    hints = get_type_hints(cls)
    values = {
        f.name: _from_json(hints[f.name], params[f.name])
        for f in dataclasses.fields(cls)
        if f.name in params
    }
    return cls(**values)


def _to_json(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date):
        return value.isoformat()
    return value


def _from_json(hint: Any, value: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return None if value is None else _from_json(options[0], value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if hint is date:
        return date.fromisoformat(value)
    return value


# -- what comes back --------------------------------------------------------------------


class OutcomeStatus(Enum):
    DONE = "done"  # the billing system did it; `data` has what it answered
    REFUSED = "refused"  # it answered no; `reason` is a flows.billing refusal reason
    # The answer was lost: it may or may not have happened. Never retried; a staff task
    # was opened for a person to check.
    UNKNOWN = "unknown"
    # It could not be reached, after retries: nothing happened.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A billing command's result, as its flow receives it."""

    key: str
    kind: str
    status: OutcomeStatus
    data: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "status": self.status.value,
            "data": dict(self.data),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            key=str(data["key"]),
            kind=str(data["kind"]),
            status=OutcomeStatus(data["status"]),
            data=dict(data.get("data") or {}),
            reason=data.get("reason"),
        )


@dataclass(frozen=True, slots=True)
class Signal:
    """Something another conversation (`Notify`) told this one's flow."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    from_conversation: int | None = None


# The inbox form of a flow's system message (flows.runtime.Inbound reads it back).
FLOW_MESSAGE = "flow"


def outcome_message(wamid: str, flow: str, outcome: Outcome) -> dict[str, Any]:
    return {
        "wamid": wamid,
        "kind": "system",
        "type": "system",
        "system_type": FLOW_MESSAGE,
        "flow": flow,
        "outcome": outcome.to_json(),
    }


def signal_message(wamid: str, notify: Notify, from_conversation: int | None) -> dict[str, Any]:
    return {
        "wamid": wamid,
        "kind": "system",
        "type": "system",
        "system_type": FLOW_MESSAGE,
        "flow": notify.flow,
        "signal": {"name": notify.name, "data": dict(notify.data), "from": from_conversation},
    }
