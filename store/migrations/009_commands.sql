-- Commands: what a flow asks the billing system to do (place an upgrade, request a
-- cancellation, stop a domain's renewal, transfer a service). Stored in the turn's
-- transaction, carried out after it commits by the command worker (bot/commands.py),
-- outside any conversation lock; the outcome goes back to the conversation as an inbox
-- row (wamid 'command:<key>'), so the flow hears it in order.
--
-- The key is the flow's idempotency key: one row per key, however often the turn that
-- asks is retried or the customer confirms; it is also the billing backends' request id.
-- A row 'running' whose heartbeat stopped belongs to a dead worker: it is claimed again
-- and the billing backend, asked with the same request id, answers with the first result
-- (or says the outcome is unknown, never acting twice).
CREATE TABLE commands (
    id bigserial PRIMARY KEY,
    key text NOT NULL UNIQUE,
    conversation_id bigint NOT NULL REFERENCES conversations (id),
    -- The flow that hears the outcome.
    reply_to text NOT NULL,
    kind text NOT NULL,
    params jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (
        status IN ('pending', 'running', 'done', 'refused', 'unknown', 'unavailable')
    ),
    attempts integer NOT NULL DEFAULT 0,
    not_before timestamptz NOT NULL DEFAULT now(),
    claimed_by text,
    heartbeat_at timestamptz,
    result jsonb,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX commands_open ON commands (id) WHERE status IN ('pending', 'running');

-- Staff tasks a flow opens about one thing (an unknown billing outcome, an upgrade to do
-- by hand) carry the flow's key: one task per key. Without a key a task is one per
-- conversation and reason while unresolved (a customer asking twice for a person).
ALTER TABLE escalations ADD COLUMN key text UNIQUE;
DROP INDEX escalations_one_open;
CREATE UNIQUE INDEX escalations_one_open ON escalations (conversation_id, reason)
    WHERE status <> 'resolved' AND key IS NULL;
