"""Prometheus metrics, served at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
OUTBOX = Gauge("outbox_rows", "Outbox rows by status", ["status"], registry=REGISTRY)
INBOX_PENDING = Gauge("inbox_pending", "Inbound messages waiting for a worker", registry=REGISTRY)
SENDS = Counter("sends_total", "Messages accepted by the Cloud API", ["sent_as"], registry=REGISTRY)
SEND_ERRORS = Counter(
    "send_errors_total", "Send errors by Cloud API error code", ["code"], registry=REGISTRY
)
SEND_SECONDS = Histogram(
    "send_seconds",
    "Duration of one Cloud API send",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
