-- Turns in batches: a worker claims the heads of up to `max_rows` conversations at once
-- and handles them in one transaction (one claim, one save, one commit for the lot),
-- instead of a transaction per message. Each claimed message is still the oldest pending
-- one of its conversation, so order within a conversation is unchanged; conversations are
-- locked in inbox id order.
--
-- claim_inbox (003) and claim_turn (004), their one-message forerunners, are no longer
-- called but stay: during a rolling deploy the previous version still runs beside this
-- one. A later migration may drop them.

CREATE FUNCTION claim_inbox_batch(max_rows integer) RETURNS SETOF inbox
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $fn$
BEGIN
    -- As claim_inbox (migration 003), planned at every call.
    RETURN QUERY EXECUTE $q$
        SELECT * FROM inbox AS i
        WHERE status = 'pending' AND not_before <= now()
          AND i.id = (
              SELECT e.id FROM inbox AS e
              WHERE e.status = 'pending' AND e.conversation_key = i.conversation_key
              ORDER BY e.id LIMIT 1)
        ORDER BY id
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    $q$ USING max_rows;
END
$fn$;

CREATE FUNCTION claim_turns(max_rows integer) RETURNS TABLE (
    inbox_id bigint,
    wamid text,
    conversation_key text,
    message jsonb,
    attempts integer,
    received_at timestamptz,
    conversation_id bigint,
    key text,
    wa_id text,
    user_id text,
    profile_name text,
    client_id text,
    flow_state text,
    context jsonb,
    updated_at timestamptz,
    last_inbound_at timestamptz,
    linked_client_id text
)
LANGUAGE plpgsql AS $fn$
DECLARE
    m inbox;
    c conversations;
    inbound timestamptz;
BEGIN
    FOR m IN SELECT * FROM claim_inbox_batch(max_rows) LOOP
        inbound := CASE
            WHEN m.message ->> 'kind' = 'system' THEN NULL
            WHEN m.message ->> 'timestamp' ~ '^[0-9]{1,11}$'
                THEN to_timestamp((m.message ->> 'timestamp')::bigint)
            ELSE now()
        END;
        c := lock_conversation(m.conversation_key, m.message ->> 'wa_id',
                               m.message ->> 'user_id', m.message ->> 'name', inbound);
        RETURN QUERY SELECT m.id, m.wamid, m.conversation_key, m.message, m.attempts,
            m.received_at, c.id, c.key, c.wa_id, c.user_id, c.profile_name, c.client_id,
            c.flow_state, c.context, c.updated_at, c.last_inbound_at,
            (SELECT l.client_id FROM contact_links AS l WHERE l.wa_id = c.wa_id);
    END LOOP;
END
$fn$;
