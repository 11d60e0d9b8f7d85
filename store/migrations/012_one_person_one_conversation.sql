-- One person, one conversation (issue 9, point 1). Since WhatsApp's 2026 usernames a
-- user's stable id is the business-scoped user id (BSUID); the phone comes only while
-- Meta has it. A person was a phone-keyed conversation one day and a 'u:<BSUID>' one the
-- next: state, identity and pacing split in two. Now every id WhatsApp has used for a
-- person points at their one conversation, and a conversation's key never changes (it
-- is the stable id the staff console shows).

-- Aliases: 'u:<BSUID>' for a business-scoped user id, the digits for a phone, and the
-- conversation's own key. A phone counts only for a conversation of the same person
-- (same BSUID, or none known): numbers are recycled, BSUIDs are not.
CREATE TABLE conversation_aliases (
    alias text PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES conversations (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversation_aliases_conversation ON conversation_aliases (conversation_id);

-- A conversation found to be the same person as an older one is merged into it and
-- kept (its inbound history stays under its key), pointing at the one that lives on.
ALTER TABLE conversations ADD COLUMN merged_into bigint REFERENCES conversations (id);

-- What was split before this migration is merged by the first message that shows both
-- ids (lock_conversation below); here every id goes to the oldest conversation that used
-- it.
INSERT INTO conversation_aliases (alias, conversation_id)
SELECT key, id FROM conversations ORDER BY id
ON CONFLICT (alias) DO NOTHING;
INSERT INTO conversation_aliases (alias, conversation_id)
SELECT 'u:' || user_id, id FROM conversations WHERE user_id IS NOT NULL ORDER BY id
ON CONFLICT (alias) DO NOTHING;
INSERT INTO conversation_aliases (alias, conversation_id)
SELECT wa_id, id FROM conversations WHERE wa_id IS NOT NULL ORDER BY id
ON CONFLICT (alias) DO NOTHING;

-- The conversation a sender's ids point at (its id and key; all NULL for someone new),
-- and whether it was found by the BSUID. (PL/pgSQL: its statements' plans are kept for
-- the session; a SQL function with subqueries is not inlined and would be planned again
-- at every call — bench/sql_costs.py.)
CREATE FUNCTION person_lookup(
    sender_wa_id text, sender_user_id text,
    OUT conv bigint, OUT conv_key text, OUT by_user_id boolean
)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    by_user_id := false;
    IF sender_user_id IS NOT NULL THEN
        SELECT c.id, c.key INTO conv, conv_key FROM conversation_aliases AS a
        JOIN conversations AS c ON c.id = a.conversation_id
        WHERE a.alias = 'u:' || sender_user_id;
        IF FOUND THEN
            by_user_id := true;
            RETURN;
        END IF;
    END IF;
    IF sender_wa_id IS NOT NULL THEN
        SELECT c.id, c.key INTO conv, conv_key FROM conversation_aliases AS a
        JOIN conversations AS c ON c.id = a.conversation_id
        WHERE a.alias = sender_wa_id
          AND (sender_user_id IS NULL OR c.user_id IS NULL OR c.user_id = sender_user_id);
    END IF;
END
$fn$;

CREATE FUNCTION person_conversation(sender_wa_id text, sender_user_id text) RETURNS bigint
LANGUAGE sql STABLE AS $fn$
    SELECT (person_lookup(sender_wa_id, sender_user_id)).conv
$fn$;

-- `loser` is the same person as `survivor`: everything of the loser moves over. With
-- `latest_state`, the conversation state is the one the person used last, else the
-- survivor's. Both rows must be locked.
CREATE FUNCTION merge_conversations(loser bigint, survivor bigint, latest_state boolean)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    l conversations;
    s conversations;
BEGIN
    IF loser = survivor THEN
        RETURN;
    END IF;
    SELECT * INTO l FROM conversations WHERE id = loser;
    SELECT * INTO s FROM conversations WHERE id = survivor;
    IF NOT latest_state THEN
        l.updated_at := '-infinity';
    END IF;
    UPDATE conversations SET
        flow_state = CASE WHEN l.updated_at > s.updated_at THEN l.flow_state ELSE s.flow_state END,
        context = CASE WHEN l.updated_at > s.updated_at THEN l.context ELSE s.context END,
        client_id = CASE WHEN l.updated_at > s.updated_at
            THEN coalesce(l.client_id, s.client_id) ELSE coalesce(s.client_id, l.client_id) END,
        wa_id = coalesce(s.wa_id, l.wa_id),
        user_id = coalesce(s.user_id, l.user_id),
        profile_name = coalesce(s.profile_name, l.profile_name),
        last_inbound_at = greatest(s.last_inbound_at, l.last_inbound_at),
        updated_at = greatest(s.updated_at, l.updated_at)
    WHERE id = survivor;
    UPDATE conversations SET merged_into = survivor WHERE id = loser OR merged_into = loser;
    UPDATE conversation_aliases SET conversation_id = survivor WHERE conversation_id = loser;
    -- Its waiting messages queue behind the survivor's, in the survivor's order.
    UPDATE inbox SET conversation_key = s.key
    WHERE conversation_key = l.key AND status = 'pending';
    UPDATE outbox SET conversation_id = survivor WHERE conversation_id = loser;
    UPDATE commands SET conversation_id = survivor WHERE conversation_id = loser;
    -- One open task per reason: the survivor's stands for both.
    UPDATE escalations AS e SET status = 'resolved', updated_at = now(),
        detail = e.detail || jsonb_build_object('merged_into_conversation', survivor)
    WHERE e.conversation_id = loser AND e.key IS NULL AND e.status <> 'resolved'
      AND EXISTS (SELECT 1 FROM escalations AS o WHERE o.conversation_id = survivor
                  AND o.reason = e.reason AND o.key IS NULL AND o.status <> 'resolved');
    UPDATE escalations SET conversation_id = survivor WHERE conversation_id = loser;
END
$fn$;

-- Point `alias` at a conversation. A BSUID is one person: a conversation it already
-- has (by alias, or as its user id: it spoke before its change was announced) is merged
-- into this one, which keeps its state (the turn announcing the change saves it).
CREATE FUNCTION claim_alias(new_alias text, conv bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    others bigint[];
    other bigint;
BEGIN
    IF new_alias LIKE 'u:%' THEN
        SELECT array_agg(DISTINCT x) INTO others FROM (
            SELECT conversation_id AS x FROM conversation_aliases WHERE alias = new_alias
            UNION
            SELECT id FROM conversations
            WHERE user_id = substr(new_alias, 3) AND merged_into IS NULL
        ) AS t WHERE x <> conv;
        IF others IS NOT NULL THEN
            PERFORM 1 FROM conversations WHERE id = ANY(others || conv) ORDER BY id FOR UPDATE;
            FOREACH other IN ARRAY others LOOP
                PERFORM merge_conversations(other, conv, false);
            END LOOP;
        END IF;
    END IF;
    INSERT INTO conversation_aliases (alias, conversation_id) VALUES (new_alias, conv)
    ON CONFLICT (alias) DO UPDATE SET conversation_id = conv, created_at = now();
END
$fn$;

-- A webhook's messages go in under their person's conversation key: the conversation
-- their BSUID points at, else their phone (of the same person: person_conversation), else
-- the key they came with. A number or BSUID change points the new ids at the person's
-- conversation at once, so what they send next queues behind the change (the dispatcher
-- merges what the new ids had started: claim_alias). Then, as in 004, the conversations'
-- locks in a fixed order, so ids commit in the order given. (Set-based, one statement per
-- step: the webhook's latency is what Meta sees; bench/README.md, 2026-12-02.)
CREATE OR REPLACE FUNCTION accept_messages(body text, wamids text[], keys text[], messages jsonb[])
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    delivery bigint;
    added integer;
    resolved text[];
    learnt text[];
    learnt_by bigint[];
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(messages) AS m WHERE m ->> 'kind' = 'system') THEN
        INSERT INTO conversation_aliases (alias, conversation_id)
        SELECT DISTINCT ON (a) a, conv
        FROM (SELECT person_conversation(m ->> 'wa_id', m ->> 'user_id') AS conv, m
              FROM unnest(messages) AS m WHERE m ->> 'kind' = 'system') AS s
        CROSS JOIN unnest(ARRAY['u:' || (s.m ->> 'new_user_id'), s.m ->> 'new_wa_id']) AS a
        WHERE s.conv IS NOT NULL AND a IS NOT NULL
        ON CONFLICT (alias) DO UPDATE SET conversation_id = EXCLUDED.conversation_id;
    END IF;
    SELECT array_agg(coalesce(p.conv_key, t.k) ORDER BY t.n),
           array_agg('u:' || (t.m ->> 'user_id')) FILTER (WHERE learns),
           array_agg(p.conv) FILTER (WHERE learns)
    INTO resolved, learnt, learnt_by
    FROM unnest(keys, messages) WITH ORDINALITY AS t(k, m, n)
    CROSS JOIN LATERAL person_lookup(t.m ->> 'wa_id', t.m ->> 'user_id') AS p
    CROSS JOIN LATERAL (
        SELECT p.conv IS NOT NULL AND NOT p.by_user_id AND t.m ->> 'user_id' IS NOT NULL
    ) AS l(learns);
    -- A BSUID seen for the first time on a known person's message (found by phone) is
    -- their alias from now on: a message right behind it with the BSUID alone must queue
    -- in the same conversation, before the dispatcher has seen either.
    IF learnt IS NOT NULL THEN
        INSERT INTO conversation_aliases (alias, conversation_id)
        SELECT DISTINCT ON (a) a, c FROM unnest(learnt, learnt_by) AS x(a, c)
        ON CONFLICT (alias) DO NOTHING;
        -- Messages behind it in this very webhook, with the BSUID alone, find it now.
        SELECT array_agg(coalesce(p.conv_key, t.k) ORDER BY t.n) INTO resolved
        FROM unnest(keys, messages) WITH ORDINALITY AS t(k, m, n)
        CROSS JOIN LATERAL person_lookup(t.m ->> 'wa_id', t.m ->> 'user_id') AS p;
    END IF;
    PERFORM pg_advisory_xact_lock(h)
    FROM (SELECT DISTINCT hashtextextended(r, 0) AS h FROM unnest(resolved) AS r ORDER BY 1) AS l;
    INSERT INTO webhook_deliveries (body) VALUES (body) RETURNING id INTO delivery;
    WITH ins AS (
        INSERT INTO inbox (wamid, conversation_key, delivery_id, message)
        SELECT w, r, delivery, x FROM unnest(wamids, resolved, messages) AS t(w, r, x)
        ON CONFLICT (wamid) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO added FROM ins;
    RETURN added;
END
$fn$;

-- Create or lock the sender's conversation and return it, read after the lock (see 004).
-- The conversation is the person's: found by their BSUID, else by their phone, else by the
-- inbox row's key (a message queued before a merge); a second conversation of the same
-- person is merged into the oldest. The sender's ids become aliases of it.
CREATE OR REPLACE FUNCTION lock_conversation(
    conv_key text, conv_wa_id text, conv_user_id text, conv_name text, inbound_at timestamptz
) RETURNS conversations
LANGUAGE plpgsql AS $fn$
DECLARE
    candidates bigint[];  -- (not `found`: that would hide plpgsql's FOUND)
    survivor bigint;
    other bigint;
    c conversations;
BEGIN
    -- Nearly always: the conversation the message was queued under, which already knows
    -- every id the message carries (so they are its aliases already).
    UPDATE conversations SET
        profile_name = coalesce(conv_name, profile_name),
        last_inbound_at = greatest(last_inbound_at, inbound_at)
    WHERE key = conv_key AND merged_into IS NULL
      AND (conv_wa_id IS NULL OR wa_id = conv_wa_id)
      AND (conv_user_id IS NULL OR user_id = conv_user_id)
    RETURNING * INTO c;
    IF FOUND THEN
        RETURN c;
    END IF;
    SELECT array_agg(DISTINCT x) INTO candidates FROM unnest(ARRAY[
        person_conversation(conv_wa_id, conv_user_id),
        (SELECT coalesce(merged_into, id) FROM conversations WHERE key = conv_key),
        (SELECT a.conversation_id FROM conversation_aliases AS a
         JOIN conversations AS o ON o.id = a.conversation_id
         WHERE conv_wa_id IS NOT NULL AND a.alias = conv_wa_id
           AND (conv_user_id IS NULL OR o.user_id IS NULL OR o.user_id = conv_user_id))
    ]) AS x WHERE x IS NOT NULL;
    IF candidates IS NULL THEN
        -- Someone new: their conversation, and their ids its aliases.
        INSERT INTO conversations AS n (key, wa_id, user_id, profile_name, last_inbound_at)
        VALUES (conv_key, conv_wa_id, conv_user_id, conv_name, inbound_at)
        ON CONFLICT (key) DO UPDATE SET updated_at = n.updated_at
        RETURNING * INTO c;
        INSERT INTO conversation_aliases (alias, conversation_id)
        SELECT DISTINCT a, c.id FROM unnest(ARRAY[conv_key, 'u:' || conv_user_id, conv_wa_id]) AS a
        WHERE a IS NOT NULL
        ON CONFLICT (alias) DO UPDATE SET conversation_id = c.id;
        IF c.wa_id IS NOT DISTINCT FROM coalesce(conv_wa_id, c.wa_id)
           AND c.user_id IS NOT DISTINCT FROM coalesce(conv_user_id, c.user_id) THEN
            RETURN c;
        END IF;
        survivor := c.id;  -- (a twin created it first without these ids: add them below)
    ELSE
        -- Locked oldest first, as every merge does, so two merges cannot deadlock.
        PERFORM 1 FROM conversations WHERE id = ANY(candidates) ORDER BY id FOR UPDATE;
        survivor := (SELECT min(x) FROM unnest(candidates) AS x);
        FOREACH other IN ARRAY candidates LOOP
            PERFORM merge_conversations(other, survivor, true);
        END LOOP;
    END IF;
    INSERT INTO conversation_aliases (alias, conversation_id)
    SELECT DISTINCT a, survivor FROM unnest(ARRAY[
        (SELECT key FROM conversations WHERE id = survivor),
        'u:' || conv_user_id,
        conv_wa_id]) AS a
    WHERE a IS NOT NULL
    ON CONFLICT (alias) DO UPDATE SET conversation_id = survivor;
    UPDATE conversations SET
        wa_id = coalesce(conv_wa_id, wa_id),
        user_id = coalesce(conv_user_id, user_id),
        profile_name = coalesce(conv_name, profile_name),
        last_inbound_at = greatest(last_inbound_at, inbound_at)
    WHERE id = survivor
    RETURNING * INTO c;
    RETURN c;
END
$fn$;

-- Pacing is per person: a conversation's messages share one bucket whatever address
-- (phone or BSUID) each was sent to. Messages without a conversation pace by recipient.
-- recipient_pacing.recipient holds this pace key.
ALTER TABLE outbox ADD COLUMN pace_key text
    GENERATED ALWAYS AS (coalesce('c:' || conversation_id::text, recipient)) STORED;
CREATE INDEX outbox_open_by_pace_key ON outbox (pace_key, id)
    WHERE status IN ('pending', 'sending');
DROP INDEX outbox_open_by_recipient;
COMMENT ON COLUMN recipient_pacing.recipient IS
    'the pace key (outbox.pace_key): c:<conversation id>, or the recipient';

DROP FUNCTION claim_outbox(integer, float8, float8);
CREATE FUNCTION claim_outbox(max_rows integer, burst float8, interval_seconds float8)
RETURNS TABLE (
    id bigint,
    recipient text,
    pace_key text,
    message jsonb,
    template jsonb,
    attempts integer,
    force_template boolean,
    last_inbound_at timestamptz
)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $fn$
BEGIN
    -- As 003, one person at a time instead of one recipient string at a time.
    RETURN QUERY EXECUTE $q$
        SELECT o.id, o.recipient, o.pace_key, o.message, o.template, o.attempts + 1,
               o.force_template, c.last_inbound_at
        FROM outbox AS o
        LEFT JOIN conversations AS c ON c.id = o.conversation_id
        LEFT JOIN recipient_pacing AS p ON p.recipient = o.pace_key
        WHERE o.status = 'pending' AND o.not_before <= now()
          AND o.id = (
              SELECT e.id FROM outbox AS e
              WHERE e.pace_key = o.pace_key AND e.status IN ('pending', 'sending')
              ORDER BY e.id LIMIT 1)
          AND (p.recipient IS NULL OR (
              (p.blocked_until IS NULL OR p.blocked_until <= now())
              AND least($2, p.tokens + extract(epoch FROM now() - p.updated_at) / $3) >= 1))
        ORDER BY o.id
        LIMIT $1
        FOR UPDATE OF o SKIP LOCKED
    $q$ USING max_rows, burst, interval_seconds;
END
$fn$;

-- A conversation's messages, newest first: the prompt on the customer's screen (a tap on
-- an older one is answered with the current options), merges, the staff transcript.
CREATE INDEX outbox_by_conversation ON outbox (conversation_id, id);
