-- The hot paths in one round trip each: storing a webhook's messages (the latency Meta
-- sees) and starting a turn (claim the message, lock its conversation, read its state).

-- A webhook's messages: conversation locks, the raw body, the inbox rows.
CREATE FUNCTION accept_messages(body text, wamids text[], keys text[], messages jsonb[])
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    delivery bigint;
    added integer;
BEGIN
    -- Per-conversation order is inbox id order. Taking each conversation's lock (in a
    -- fixed order, so no deadlock) makes ids commit in the order they are given: a later
    -- id of the same customer can never become visible first.
    PERFORM pg_advisory_xact_lock(h)
    FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(keys) AS k ORDER BY 1) AS l;
    INSERT INTO webhook_deliveries (body) VALUES (body) RETURNING id INTO delivery;
    WITH ins AS (
        INSERT INTO inbox (wamid, conversation_key, delivery_id, message)
        SELECT w, k, delivery, m FROM unnest(wamids, keys, messages) AS t(w, k, m)
        ON CONFLICT (wamid) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO added FROM ins;
    RETURN added;
END
$fn$;

-- Create or lock a conversation and return it, read *after* the lock is held (the race
-- aiogram's issue #1317 describes: state read before the lock is stale). A customer's
-- own message (inbound_at not null) opens the 24 h window.
CREATE FUNCTION lock_conversation(
    conv_key text, conv_wa_id text, conv_user_id text, conv_name text, inbound_at timestamptz
) RETURNS conversations
LANGUAGE sql AS $fn$
    INSERT INTO conversations AS c (key, wa_id, user_id, profile_name, last_inbound_at)
    VALUES (conv_key, conv_wa_id, conv_user_id, conv_name, inbound_at)
    ON CONFLICT (key) DO UPDATE SET
        wa_id = coalesce(EXCLUDED.wa_id, c.wa_id),
        user_id = coalesce(EXCLUDED.user_id, c.user_id),
        profile_name = coalesce(EXCLUDED.profile_name, c.profile_name),
        last_inbound_at = greatest(c.last_inbound_at, EXCLUDED.last_inbound_at)
    RETURNING *
$fn$;

-- The start of a turn: the next message (see claim_inbox), its conversation locked, and
-- the billing client a number change tied this WhatsApp number to, if any.
CREATE FUNCTION claim_turn() RETURNS TABLE (
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
    SELECT * INTO m FROM claim_inbox();
    IF NOT FOUND THEN
        RETURN;
    END IF;
    inbound := CASE
        WHEN m.message ->> 'kind' = 'system' THEN NULL
        WHEN m.message ->> 'timestamp' ~ '^[0-9]{1,11}$'
            THEN to_timestamp((m.message ->> 'timestamp')::bigint)
        ELSE now()
    END;
    c := lock_conversation(m.conversation_key, m.message ->> 'wa_id', m.message ->> 'user_id',
                           m.message ->> 'name', inbound);
    RETURN QUERY SELECT m.id, m.wamid, m.conversation_key, m.message, m.attempts,
        m.received_at, c.id, c.key, c.wa_id, c.user_id, c.profile_name, c.client_id,
        c.flow_state, c.context, c.updated_at, c.last_inbound_at,
        (SELECT l.client_id FROM contact_links AS l WHERE l.wa_id = c.wa_id);
END
$fn$;
