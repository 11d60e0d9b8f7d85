-- claim_turn (004) and claim_inbox (003), the one-message claims, have had no caller since
-- turns are claimed in batches (007, claim_turns / claim_inbox_batch). 007 kept them for
-- the rolling deploy from the version that called them; that version is gone.
DROP FUNCTION claim_turn();
DROP FUNCTION claim_inbox();
