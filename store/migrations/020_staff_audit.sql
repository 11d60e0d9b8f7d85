-- Who changed the team or the canned replies, and when (issue 15: every staff action is
-- recorded). actor_id NULL: the command line (python -m bot staff …).
CREATE TABLE staff_audit (
    id bigserial PRIMARY KEY,
    actor_id bigint REFERENCES staff (id),
    action text NOT NULL,
    -- The member's username or the canned reply's code.
    subject text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    at timestamptz NOT NULL DEFAULT now()
);
