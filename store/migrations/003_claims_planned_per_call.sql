-- The claim queries, planned at every call and written so that no plan is quadratic.
--
-- A plan cached by a long-lived connection while the inbox was empty (a fresh database,
-- the first minutes of a deploy) checked "is this the oldest pending message of its
-- conversation?" by walking every pending row: with a backlog of 5,000 messages each
-- claim took two seconds. PL/pgSQL's EXECUTE plans afresh each time, with the table's
-- real size, for a fraction of a millisecond.
--
-- The check itself is a correlated "first open row of this conversation" subquery, not
-- NOT EXISTS: with statistics saying open rows are rare, the planner turned NOT EXISTS
-- into a join that rescans every open row per candidate (4 ms a claim at 4,000 pending,
-- measured), while the subquery stays an index probe per candidate.
--
-- And before the first statistics (a young table) the planner would rather sort a bitmap
-- scan of every open row than walk the id index and stop at the first free head (1.6 ms
-- against 0.2 ms at 1,000 open rows): sequential scans, bitmaps and sorts are off for
-- these two queries (SET on the function applies to it only).

CREATE FUNCTION claim_inbox() RETURNS SETOF inbox
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $fn$
BEGIN
    RETURN QUERY EXECUTE $q$
        SELECT * FROM inbox AS i
        WHERE status = 'pending' AND not_before <= now()
          AND i.id = (
              SELECT e.id FROM inbox AS e
              WHERE e.status = 'pending' AND e.conversation_key = i.conversation_key
              ORDER BY e.id LIMIT 1)
        ORDER BY id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    $q$;
END
$fn$;

CREATE FUNCTION claim_outbox(max_rows integer, burst float8, interval_seconds float8)
RETURNS TABLE (
    id bigint,
    recipient text,
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
    RETURN QUERY EXECUTE $q$
        SELECT o.id, o.recipient, o.message, o.template, o.attempts + 1,
               o.force_template, c.last_inbound_at
        FROM outbox AS o
        LEFT JOIN conversations AS c ON c.id = o.conversation_id
        LEFT JOIN recipient_pacing AS p ON p.recipient = o.recipient
        WHERE o.status = 'pending' AND o.not_before <= now()
          AND o.id = (
              SELECT e.id FROM outbox AS e
              WHERE e.recipient = o.recipient AND e.status IN ('pending', 'sending')
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

-- Queue tables churn: keep their statistics and dead rows in check sooner than the
-- defaults (10 % / 20 % of the table) would.
ALTER TABLE inbox SET (autovacuum_analyze_threshold = 1000, autovacuum_analyze_scale_factor = 0.02,
                       autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE outbox SET (autovacuum_analyze_threshold = 1000, autovacuum_analyze_scale_factor = 0.02,
                        autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0.02);
