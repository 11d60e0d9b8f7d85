-- The key that signs the staff console's cookies when STAFF_SECRET is not set: made once
-- by the first process that needs it, so every process (and every restart) signs and
-- checks with the same one. One row at most.
CREATE TABLE console_secret (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
