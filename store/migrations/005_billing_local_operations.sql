-- What the local billing backend does besides holding the imported records: upgrades
-- waiting for payment, cancellation requests, quotes, and the events a billing system
-- emits when something changes.

-- Invoices the bot generated carry the request that generated them: asked twice, the
-- same invoice comes back.
ALTER TABLE billing_invoices ADD COLUMN request_id text UNIQUE;
CREATE SEQUENCE billing_invoice_number;

-- An upgrade applies once its invoice is paid.
CREATE TABLE billing_upgrade_orders (
    invoice_id text PRIMARY KEY REFERENCES billing_invoices (id),
    service_id text NOT NULL REFERENCES billing_services (id),
    product_id text NOT NULL REFERENCES billing_products (id),
    billing_cycle text NOT NULL,
    new_recurring numeric(12, 2) NOT NULL,
    policy text NOT NULL CHECK (policy IN ('difference', 'prorata')),
    -- Pro-rata keeps the next due date; the difference policy restarts the period on
    -- the day the plan is enabled (NULL here: computed when paid).
    next_due date,
    applied_at timestamptz
);

CREATE TABLE billing_cancellation_requests (
    id text PRIMARY KEY,
    service_id text NOT NULL REFERENCES billing_services (id),
    type text NOT NULL CHECK (type IN ('immediate', 'end_of_period')),
    reason text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    request_id text UNIQUE
);
CREATE SEQUENCE billing_cancellation_number;

CREATE TABLE billing_quotes (
    id text PRIMARY KEY,
    client_id text NOT NULL REFERENCES billing_clients (id),
    subject text NOT NULL DEFAULT '',
    total numeric(12, 2) NOT NULL CHECK (total >= 0),
    valid_until date,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE billing_quote_number;

-- Billing events in SPEC §4's format: what POST /events receives and what the local
-- backend emits in the same transaction as the change; the alerts turn them into
-- WhatsApp messages. The unique id makes a repeated event a no-op.
CREATE TABLE events (
    id text PRIMARY KEY,
    type text NOT NULL,
    occurred_at timestamptz NOT NULL,
    client_id text,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
CREATE INDEX events_unprocessed ON events (received_at) WHERE processed_at IS NULL;
