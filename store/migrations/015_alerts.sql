-- Alerts (issue 11): what became of each billing event, switches per alert type, and
-- broadcasts.

-- The alert worker takes events in order per client (the oldest unprocessed one of each
-- client) and, in the event's own transaction, writes its one outbox row or records why
-- nothing was sent. A billing lookup that fails is retried later (`not_before`).
ALTER TABLE events
    ADD COLUMN outcome text CHECK (outcome IN ('queued', 'skipped')),
    ADD COLUMN skip_reason text,
    ADD COLUMN outbox_id bigint,
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN not_before timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN last_error text;
DROP INDEX events_unprocessed;
CREATE INDEX events_unprocessed ON events (client_id, occurred_at, received_at, id)
    WHERE processed_at IS NULL;
CREATE INDEX events_by_client ON events (client_id, occurred_at);
CREATE INDEX events_by_received ON events (received_at);

-- All alerts off (`enabled` false), or only some types off. The password alert is a
-- security notice and is sent whatever these say.
ALTER TABLE alert_preferences
    ADD COLUMN disabled_types text[] NOT NULL DEFAULT '{}';

-- The server a service runs on (optional in the local import), for broadcasts to the
-- clients of one server ("segment server:Y").
ALTER TABLE billing_services ADD COLUMN server text;

-- A broadcast: one approved template to a segment of clients, once per client whatever
-- happens (a second run with the same id sends nothing twice; a crashed run resumes).
CREATE TABLE broadcasts (
    id text PRIMARY KEY,
    template text NOT NULL,
    segment text NOT NULL,
    params jsonb NOT NULL DEFAULT '[]'::jsonb,
    started_at timestamptz NOT NULL DEFAULT now(),
    planned integer,
    finished_at timestamptz
);
CREATE TABLE broadcast_recipients (
    broadcast_id text NOT NULL REFERENCES broadcasts (id),
    client_id text NOT NULL,
    outbox_id bigint,
    skip_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (broadcast_id, client_id)
);
