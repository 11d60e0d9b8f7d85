-- Service transfers between customers (issue 13; help page "Como cambio el titular de un
-- servicio a otro cliente"): both account holders send the same WhatsApp message, byte
-- for byte. Each message is kept here: who sent it (as origin or destination holder),
-- its text and the text's SHA-256, what it was matched with and what came of it. A pair
-- is matched in the transaction that records the second message, under a lock on the
-- text's hash, so two holders writing at the same instant still meet.
CREATE TABLE transfer_requests (
    id bigserial PRIMARY KEY,
    conversation_id bigint NOT NULL,
    client_id text NOT NULL,
    role text NOT NULL CHECK (role IN ('origin', 'destination')),
    origin_client_id text NOT NULL,
    destination_client_id text NOT NULL,
    -- The service as the message names it, and (origin side) the one it is.
    service_label text NOT NULL,
    service_id text,
    text text NOT NULL,
    text_sha256 text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'matched', 'expired', 'duplicate')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    matched_with bigint REFERENCES transfer_requests (id),
    command_key text,
    -- What the transfer came to (done, needs_staff, refused: <reason>), for staff.
    outcome text,
    decided_at timestamptz
);
CREATE INDEX transfer_requests_pending ON transfer_requests (text_sha256)
    WHERE status = 'pending';
CREATE INDEX transfer_requests_expiring ON transfer_requests (expires_at)
    WHERE status = 'pending';
