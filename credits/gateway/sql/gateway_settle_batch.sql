CREATE OR REPLACE FUNCTION gateway_settle_batch(p_items jsonb, p_now timestamptz)
RETURNS TABLE(ord integer, outcome text, charged integer, available bigint, status text,
              event_id uuid, auto_topup_user uuid)
LANGUAGE plpgsql AS $$
-- `POST /internal/v1/settle/batch` in one round trip: each item of `p_items` (an array of
-- {request_id, commit, model, prompt_tokens, completion_tokens, reason, http_status}, already
-- validated by the view) is settled by `gateway_settle`, the single settle, unchanged. `ord` is
-- the item's place in the array (from 0).
--
-- One transaction, one commit for the whole batch (the point of batching), so:
-- - items run in the order of their hold's account, then of the array. Every other operation
--   locks one account at a time; two batches lock theirs in the same order, so a batch can
--   wait for another but never deadlock with it. Items of one account keep the batch's order,
--   so their answers and ledger rows are those of the same settles sent one by one.
-- - each item runs in its own exception block (a subtransaction): an error in one (a lock
--   timeout, a broken invariant) undoes that item only and answers `error` with its SQLSTATE;
--   the other items are kept. A statement timeout is not caught: it ends the whole call.
-- - an item that answers `due` (the services must write what came due first) wrote nothing,
--   and every later item of its account answers `due` without running, so that the caller
--   settles them one by one after this commit, in the batch's order: they see the services'
--   writes exactly as one-by-one settles would. An `error` defers nothing: the next item of
--   the account is tried as it would be if sent alone after a failed one.
#variable_conflict use_column
DECLARE
    it record;
    r record;
    v_deferred uuid;  -- the account whose later items are left to the caller
BEGIN
    FOR it IN
        SELECT (e.n - 1)::integer AS n, e.item, hd.account_id
          FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(item, n)
          LEFT JOIN credits_hold hd ON hd.request_id = e.item->>'request_id'
         ORDER BY hd.account_id NULLS LAST, e.n
    LOOP
        ord := it.n;
        charged := NULL;
        available := NULL;
        status := NULL;
        event_id := NULL;
        auto_topup_user := NULL;
        IF it.account_id IS NOT NULL AND it.account_id = v_deferred THEN
            outcome := 'due';
            RETURN NEXT;
            CONTINUE;
        END IF;
        BEGIN
            SELECT s.outcome, s.charged, s.available, s.status, s.event_id, s.auto_topup_user INTO r
              FROM gateway_settle(it.item->>'request_id', (it.item->>'commit')::boolean,
                                  it.item->>'model', (it.item->>'prompt_tokens')::integer,
                                  (it.item->>'completion_tokens')::integer,
                                  it.item->>'reason', (it.item->>'http_status')::integer,
                                  p_now) s;
            outcome := r.outcome;
            charged := r.charged;
            available := r.available;
            status := r.status;
            -- What the caller announces after the commit, as for a single settle: a
            -- credits.low event the item wrote, an account it stamped for an auto top-up.
            event_id := r.event_id;
            auto_topup_user := r.auto_topup_user;
        EXCEPTION WHEN OTHERS THEN
            outcome := 'error';
            status := SQLSTATE;
        END;
        IF outcome = 'due' THEN
            v_deferred := it.account_id;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
