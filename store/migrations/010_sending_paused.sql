-- Sending pauses as a whole when WhatsApp says the account or our credentials cannot send
-- (flows/wa_errors.py, Action.PAUSE): every process stops claiming, every queued message
-- is kept, and the sender probes the number until it answers again. Kept on the one row
-- every claim already reads, so checking costs no extra round trip.
ALTER TABLE send_budget
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN paused_code integer,
    ADD COLUMN paused_reason text,
    ADD COLUMN probe_at timestamptz,
    ADD COLUMN probes integer NOT NULL DEFAULT 0;
