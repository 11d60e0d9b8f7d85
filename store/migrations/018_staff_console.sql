-- The staff console (issue 15): staff accounts and their sessions, canned replies, and
-- the escalation queue in Chatwoot's vocabulary (pending → open → resolved, snoozed;
-- assignee, priority, waiting since, first reply), with every staff action recorded.

CREATE TABLE staff (
    id bigserial PRIMARY KEY,
    -- Matched case-insensitively; a client's account manager (billing) names one.
    username text NOT NULL,
    role text NOT NULL CHECK (role IN ('agent', 'admin')),
    -- argon2id, never the password (argon2-cffi's encoded form).
    password_hash text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    -- Wrong passwords in a row; at the limit the account is locked until locked_until.
    failed_logins integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX staff_username ON staff (lower(username));

-- A logged-in browser. The cookie carries the session's id, signed; the row says whether
-- it still holds (logout and disabling an account end it at once, not at the cookie's
-- expiry) and the CSRF token its forms must send back.
CREATE TABLE staff_sessions (
    id text PRIMARY KEY,
    staff_id bigint NOT NULL REFERENCES staff (id),
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX staff_sessions_by_staff ON staff_sessions (staff_id);

-- Canned replies: typed as /code in the reply box.
CREATE TABLE canned_replies (
    code text PRIMARY KEY CHECK (code ~ '^[a-z0-9_-]{1,32}$'),
    body text NOT NULL CHECK (length(body) BETWEEN 1 AND 4096),
    updated_by bigint REFERENCES staff (id),
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE escalations
    ADD COLUMN priority text NOT NULL DEFAULT 'normal'
        CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    ADD COLUMN assigned_to bigint REFERENCES staff (id),
    -- Snoozed: until this time, or (NULL) until the customer's next message; either way
    -- a customer's message wakes it.
    ADD COLUMN snoozed_until timestamptz,
    -- Since when the customer waits for a person: the item's creation, then each first
    -- customer message after a staff reply; NULL while staff spoke last.
    ADD COLUMN waiting_since timestamptz,
    ADD COLUMN first_reply_at timestamptz,
    ADD COLUMN resolved_at timestamptz;
UPDATE escalations SET waiting_since = created_at WHERE status <> 'resolved';
UPDATE escalations SET resolved_at = updated_at WHERE status = 'resolved';
ALTER TABLE escalations ALTER COLUMN waiting_since SET DEFAULT now();
CREATE INDEX escalations_unresolved ON escalations (conversation_id) WHERE status <> 'resolved';
CREATE INDEX escalations_queue ON escalations (status, created_at) WHERE status <> 'resolved';
-- The console's live updates read the latest change (store/transcript.py).
CREATE INDEX escalations_changed ON escalations (updated_at);

-- Who did what to an item, when (staff_id NULL: the customer or the bot).
CREATE TABLE escalation_actions (
    id bigserial PRIMARY KEY,
    escalation_id bigint NOT NULL REFERENCES escalations (id),
    staff_id bigint REFERENCES staff (id),
    action text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX escalation_actions_by_item ON escalation_actions (escalation_id, id);

-- The transcript: an inbound message belongs to the conversation that handled it (its
-- id survives a number change; the key it arrived under may not be the conversation's).
ALTER TABLE inbox ADD COLUMN conversation_id bigint REFERENCES conversations (id);
UPDATE inbox AS i SET conversation_id = coalesce(c.merged_into, c.id)
FROM conversations AS c WHERE c.key = i.conversation_key;
UPDATE inbox AS i SET conversation_id = a.conversation_id
FROM conversation_aliases AS a
WHERE i.conversation_id IS NULL AND a.alias = i.conversation_key;
CREATE INDEX inbox_by_conversation ON inbox (conversation_id, id);

-- Staff replies are recorded with who wrote them.
ALTER TABLE outbox ADD COLUMN staff_id bigint REFERENCES staff (id);

-- Merging two conversations of one person moves the loser's transcript too.
CREATE OR REPLACE FUNCTION merge_conversations(loser bigint, survivor bigint, latest_state boolean)
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
    UPDATE inbox SET conversation_id = survivor WHERE conversation_id = loser;
    UPDATE commands SET conversation_id = survivor WHERE conversation_id = loser;
    -- One open task per reason: the survivor's stands for both.
    WITH merged AS (
        UPDATE escalations AS e SET status = 'resolved', updated_at = now(),
            resolved_at = now(),
            detail = e.detail || jsonb_build_object('merged_into_conversation', survivor)
        WHERE e.conversation_id = loser AND e.key IS NULL AND e.status <> 'resolved'
          AND EXISTS (SELECT 1 FROM escalations AS o WHERE o.conversation_id = survivor
                      AND o.reason = e.reason AND o.key IS NULL AND o.status <> 'resolved')
        RETURNING e.id
    )
    INSERT INTO escalation_actions (escalation_id, action, detail)
    SELECT id, 'merged', jsonb_build_object('into_conversation', survivor) FROM merged;
    UPDATE escalations SET conversation_id = survivor WHERE conversation_id = loser;
END
$fn$;
