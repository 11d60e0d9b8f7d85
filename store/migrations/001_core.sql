-- The durable pipeline: raw webhook deliveries, the inbox, conversations, the outbox.

-- Meta offers no history to fetch later, so every accepted POST is kept as received.
CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    body text NOT NULL
);

-- One row per inbound WhatsApp message; the unique wamid makes a redelivery a no-op.
CREATE TABLE inbox (
    id bigserial PRIMARY KEY,
    wamid text NOT NULL UNIQUE,
    conversation_key text NOT NULL,
    delivery_id bigint REFERENCES webhook_deliveries (id),
    received_at timestamptz NOT NULL DEFAULT now(),
    message jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    not_before timestamptz NOT NULL DEFAULT now(),
    last_error text,
    processed_at timestamptz,
    -- host:pid of the process that acted on it (several processes share the work).
    processed_by text
);
CREATE INDEX inbox_pending ON inbox (id) WHERE status = 'pending';
CREATE INDEX inbox_pending_by_conversation ON inbox (conversation_key, id) WHERE status = 'pending';

-- One row per customer (WhatsApp user): where they are in the flows, and their 24 h window.
CREATE TABLE conversations (
    id bigserial PRIMARY KEY,
    key text NOT NULL UNIQUE,
    wa_id text,
    user_id text,
    profile_name text,
    client_id text,
    flow_state text NOT NULL DEFAULT 'menu.start',
    context jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_inbound_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_wa_id ON conversations (wa_id);
CREATE INDEX conversations_user_id ON conversations (user_id);

-- Every message we send. Its id travels as biz_opaque_callback_data and comes back in
-- status webhooks, which is how an ambiguous send is recognised as delivered.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    recipient text NOT NULL,
    conversation_id bigint REFERENCES conversations (id),
    inbox_id bigint REFERENCES inbox (id),
    purpose text NOT NULL DEFAULT 'reply',
    message jsonb NOT NULL,
    template jsonb,
    status text NOT NULL DEFAULT 'pending' CHECK (
        status IN ('pending', 'sending', 'accepted', 'sent', 'delivered', 'read', 'failed')
    ),
    attempts integer NOT NULL DEFAULT 0,
    not_before timestamptz NOT NULL DEFAULT now(),
    claimed_at timestamptz,
    sent_as text CHECK (sent_as IN ('message', 'template')),
    -- Meta said the 24 h window was closed (131047): the next attempt uses the template.
    force_template boolean NOT NULL DEFAULT false,
    wamid text UNIQUE,
    error_code integer,
    error_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    accepted_at timestamptz,
    status_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_open ON outbox (id) WHERE status IN ('pending', 'sending');
CREATE INDEX outbox_open_by_recipient ON outbox (recipient, id)
    WHERE status IN ('pending', 'sending');
CREATE INDEX outbox_inbox ON outbox (inbox_id);

-- The number-wide send budget (token bucket), shared by every process.
CREATE TABLE send_budget (
    id integer PRIMARY KEY CHECK (id = 1),
    tokens double precision NOT NULL,
    updated_at timestamptz NOT NULL
);
INSERT INTO send_budget (id, tokens, updated_at) VALUES (1, 0, now());

-- Per-recipient pacing (WhatsApp's pair rate limit), a token bucket per recipient.
CREATE TABLE recipient_pacing (
    recipient text PRIMARY KEY,
    tokens double precision NOT NULL,
    updated_at timestamptz NOT NULL,
    blocked_until timestamptz
);

-- A WhatsApp number tied to a billing client other than by the account's phone:
-- written when WhatsApp tells us a known customer changed number.
CREATE TABLE contact_links (
    wa_id text PRIMARY KEY,
    client_id text NOT NULL,
    reason text NOT NULL,
    previous_wa_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Conversations handed to a person (the staff queue works these).
CREATE TABLE escalations (
    id bigserial PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES conversations (id),
    client_id text,
    reason text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'open', 'snoozed', 'resolved')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- At most one unresolved escalation per conversation.
CREATE UNIQUE INDEX escalations_one_open ON escalations (conversation_id)
    WHERE status <> 'resolved';

-- Whether a client wants WhatsApp alerts; no row means yes.
CREATE TABLE alert_preferences (
    client_id text PRIMARY KEY,
    enabled boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Outbox statuses only move forward: a late "sent" never undoes "read".
CREATE FUNCTION outbox_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'pending' THEN 0
        WHEN 'sending' THEN 1
        WHEN 'accepted' THEN 2
        WHEN 'sent' THEN 3
        WHEN 'failed' THEN 4
        WHEN 'delivered' THEN 5
        WHEN 'read' THEN 6
    END
$$;
