-- A pass of `whmcs sync` reads every client's details, one API call each (and WHMCS
-- checks the API secret with bcrypt on every call): at 50,000 clients that is long
-- enough to be cut short, by the process being killed or WHMCS being down for longer
-- than the backoff. Where the pass stands is kept here, page by page in the transaction
-- that writes the page, so the next run goes on from there instead of from client 1.
-- One row while a pass is under way, none between passes.
CREATE TABLE whmcs_sync_progress (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    -- When the pass began: once it is complete, index rows not read since then are of
    -- clients WHMCS no longer has (a resumed pass is still one pass).
    started_at timestamptz NOT NULL DEFAULT now(),
    -- GetClients rows (by id, ascending) read so far: where the next page starts.
    next_offset integer NOT NULL DEFAULT 0,
    -- The highest client id read. Clients deleted since shift the offsets down: the next
    -- page must reach back to this id, or nobody in between would be read.
    last_client_id bigint NOT NULL DEFAULT 0,
    -- Counted over the whole pass, for its report.
    clients integer NOT NULL DEFAULT 0,
    with_phone integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
