-- The WHMCS adapter's own tables (BILLING_BACKEND=whmcs). WHMCS keeps the billing data;
-- these hold what its API cannot give us.

-- WHMCS's API cannot look a client up by phone, so we keep the index: filled by a sync
-- (GetClients, then GetClientsDetails per client) and refreshed by client events.
CREATE TABLE whmcs_clients (
    client_id text PRIMARY KEY,
    -- The phone reduced to the key WhatsApp ids are compared on (flows/phones.py).
    phone_key text,
    phone text NOT NULL DEFAULT '',
    name text NOT NULL,
    email text NOT NULL,
    -- WHMCS's client status: Active, Inactive or Closed (closed accounts identify nobody).
    status text NOT NULL,
    verified boolean NOT NULL DEFAULT false,
    synced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX whmcs_clients_phone_key ON whmcs_clients (phone_key);

-- The writes to WHMCS that must happen at most once (placing an upgrade, requesting a
-- cancellation), by the request id the flow gives (the inbound message's id). A row is
-- written `pending` before the call: `done` holds the answer to give a repeat; a row
-- left `pending` (we died mid-call) or `unknown` (the answer was lost) means nobody knows
-- whether WHMCS acted, so the call is never made again and a person checks.
CREATE TABLE whmcs_requests (
    request_id text NOT NULL,
    action text NOT NULL,
    client_id text NOT NULL,
    params jsonb NOT NULL DEFAULT '{}'::jsonb,
    status text NOT NULL CHECK (status IN ('pending', 'done', 'unknown')),
    result jsonb,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, action)
);
CREATE INDEX whmcs_requests_unresolved ON whmcs_requests (created_at) WHERE status <> 'done';
-- Upgrade invoices name the upgrade, not the service: this finds the service back.
CREATE INDEX whmcs_requests_invoice ON whmcs_requests ((result ->> 'invoice_id'))
    WHERE action = 'UpgradeProduct';
