"""Prometheus metrics, served at GET /metrics.

Counters and histograms are kept by the process that counts them. Under `serve`'s
supervisor the webhooks are counted in the HTTP processes and the turns and sends in the
background ones, so the supervisor points every child at one directory
(`PROMETHEUS_MULTIPROC_DIR`, prometheus-client's multiprocess mode) and a scrape of any
HTTP process adds up all of them. The queue gauges (outbox rows by status, inbox pending)
are read from the database at each scrape, so every process reports the same figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from store.queue import Gauges as StaffQueue

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OUTBOX_STATUSES = ("pending", "sending", "accepted", "sent", "delivered", "read", "failed")

REGISTRY = CollectorRegistry(auto_describe=True)

WEBHOOKS = Counter(
    "webhook_requests_total",
    "Webhook POSTs by outcome (accepted, duplicate, unsigned, forged, malformed, too_large, …)",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_MESSAGES = Counter(
    "webhook_messages_total", "Inbound messages stored in the inbox", registry=REGISTRY
)
WEBHOOK_ERRORS = Counter(
    "webhook_errors_total",
    "Errors Meta reports inside webhooks (value.errors), by code",
    ["code"],
    registry=REGISTRY,
)
WEBHOOK_OTHER_FIELDS = Counter(
    "webhook_other_fields_total",
    "Webhook changes of a field other than messages (standby, handovers…), not answered",
    ["field"],
    registry=REGISTRY,
)
WEBHOOK_STATUSES = Counter(
    "webhook_statuses_total", "Status updates received", ["status"], registry=REGISTRY
)
INBOX_LAG = Histogram(
    "inbox_lag_seconds",
    "From a message's arrival in the inbox to its turn being committed",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
TURNS = Counter(
    "turns_total", "Inbound messages processed, by result", ["result"], registry=REGISTRY
)
SENDS = Counter("sends_total", "Messages accepted by the Cloud API", ["sent_as"], registry=REGISTRY)
SEND_ERRORS = Counter(
    "send_errors_total", "Send errors by Cloud API error code", ["code"], registry=REGISTRY
)
EVENTS_RECEIVED = Counter(
    "events_received_total",
    "POST /events by outcome (accepted, duplicate, missing, invalid, malformed, stale, "
    "future, too_large, unavailable, not_configured)",
    ["outcome"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "alerts_total",
    "Billing events settled by the alert worker, by event type and outcome (queued, "
    "skipped_<reason>, retry)",
    ["type", "outcome"],
    registry=REGISTRY,
)
DOUBLE_DELIVERIES = Counter(
    "double_deliveries_total",
    "Messages delivered by two attempts: a send retried after its answer was lost had "
    "reached WhatsApp (the customer got it twice)",
    registry=REGISTRY,
)
BILLING_CONFIGURATION_ERRORS = Counter(
    "billing_configuration_errors_total",
    "Billing calls refused for our setup (credentials, IP, API role), by action: an "
    "operator must look",
    ["action"],
    registry=REGISTRY,
)
COMMANDS = Counter(
    "commands_total",
    "Billing commands carried out, by kind and outcome (done, refused, unknown, "
    "unavailable, retried)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
COMMAND_SECONDS = Histogram(
    "command_seconds",
    "Duration of one billing command's call",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60),
    registry=REGISTRY,
)
SEND_PAUSES = Counter(
    "send_pauses_total",
    "Times all sending paused (an account-level or credentials error), by Cloud API code",
    ["code"],
    registry=REGISTRY,
)
SEND_SECONDS = Histogram(
    "send_seconds",
    "Duration of one Cloud API send",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)


class _Queues(Collector):
    """The queue gauges of one scrape, read from the database by the caller."""

    def __init__(
        self,
        outbox: Mapping[str, int],
        inbox_pending: int,
        paused: bool,
        alerts: Mapping[tuple[str, str], int],
        staff_queue: StaffQueue | None,
    ) -> None:
        self.outbox = outbox
        self.inbox_pending = inbox_pending
        self.paused = paused
        self.alerts = alerts
        self.staff_queue = staff_queue

    def collect(self) -> Iterable[Metric]:
        rows = GaugeMetricFamily("outbox_rows", "Outbox rows by status", labels=["status"])
        for status in OUTBOX_STATUSES:
            rows.add_metric([status], self.outbox.get(status, 0))
        yield rows
        yield GaugeMetricFamily(
            "inbox_pending", "Inbound messages waiting for a worker", value=self.inbox_pending
        )
        yield GaugeMetricFamily(
            "sending_paused",
            "1 while all sending is paused (an account-level or credentials error)",
            value=1 if self.paused else 0,
        )
        alerts = GaugeMetricFamily(
            "alerts_last_24h",
            "Billing events received in the last 24 h by type and what became of their alert "
            "(pending, queued, sent, delivered, read, failed_<code>, skipped_<reason>)",
            labels=["type", "state"],
        )
        for (event_type, state), n in sorted(self.alerts.items()):
            alerts.add_metric([event_type, state], n)
        yield alerts
        if self.staff_queue is not None:
            items = GaugeMetricFamily(
                "staff_queue_items", "Unresolved staff queue items by status", labels=["status"]
            )
            for status in ("pending", "open", "snoozed"):
                items.add_metric([status], self.staff_queue.by_status.get(status, 0))
            yield items
            yield GaugeMetricFamily(
                "staff_queue_oldest_waiting_seconds",
                "How long the customer waiting longest for a person has waited",
                value=self.staff_queue.oldest_waiting_seconds,
            )


def render(
    outbox: Mapping[str, int] | None,
    inbox_pending: int | None,
    *,
    paused: bool = False,
    alerts: Mapping[tuple[str, str], int] | None = None,
    staff_queue: StaffQueue | None = None,
) -> bytes:
    """The /metrics page: this process's metrics (or, in multiprocess mode, every
    process's), then the queue gauges when the database could be read."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted, path=directory)  # type: ignore[no-untyped-call]
        page = generate_latest(counted)
    else:
        page = generate_latest(REGISTRY)
    if outbox is not None and inbox_pending is not None:
        queues = CollectorRegistry()
        queues.register(_Queues(outbox, inbox_pending, paused, alerts or {}, staff_queue))
        page += generate_latest(queues)
    return page


def reset_multiprocess_dir(directory: Path) -> None:
    """Empty a multiprocess directory before the children start: files left by an
    earlier run would be added to this run's counters."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
