-- Statuses per attempt (issue 9, point 6). A send whose answer was lost is sent again
-- once the ambiguity window passes; if the first attempt did reach WhatsApp, its statuses
-- still come, late, under its own wamid. Each attempt's statuses are kept here (the
-- attempt number travels in biz_opaque_callback_data as "<outbox id>.<attempt>"), so a
-- late status is recorded against the attempt it belongs to, and two attempts both
-- delivered — the customer got the message twice — are seen and counted.
CREATE TABLE outbox_attempts (
    outbox_id bigint NOT NULL REFERENCES outbox (id),
    -- 0 when the status did not say which attempt (an id sent before this migration).
    attempt integer NOT NULL,
    wamid text NOT NULL,
    status text NOT NULL,
    status_at timestamptz NOT NULL,
    error_code integer,
    PRIMARY KEY (outbox_id, attempt)
);
