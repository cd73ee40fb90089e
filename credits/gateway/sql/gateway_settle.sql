CREATE OR REPLACE FUNCTION gateway_settle(p_request_id text, p_commit boolean, p_model text,
                               p_prompt_tokens integer, p_completion_tokens integer,
                               p_reason text, p_http_status integer, p_now timestamptz)
RETURNS TABLE(outcome text, charged integer, available bigint, status text, event_id uuid,
              auto_topup_user uuid)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    a record;
    h record;
    v_lot_expires timestamptz;
    v_balance bigint;
    v_reserved bigint;
    v_charged integer;
    v_event uuid;
    v_wanted text := CASE WHEN p_commit THEN 'committed' ELSE 'released' END;
BEGIN
    -- The hold's account, locked first, in one statement.
    SELECT ca.user_id, ca.balance, ca.reserved, ca.next_event_at, ca.month_spent,
           ca.month_start, ca.low_balance_threshold, ca.auto_topup_threshold INTO a
      FROM credits_creditaccount ca
     WHERE ca.user_id = (SELECT hd.account_id FROM credits_hold hd
                          WHERE hd.request_id = p_request_id)
       FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT hd.id, hd.lot_id, hd.amount, hd.status, hd.charged, hd.expires_at, hd.api_key_id,
           hd.settled_available, hd.decision
      INTO h FROM credits_hold hd WHERE hd.request_id = p_request_id FOR UPDATE;
    IF h.status IN ('committed', 'released') THEN
        IF h.status = v_wanted THEN
            outcome := 'replay';
            charged := h.charged;
            -- What the first settle answered (before issue 23, kept in the stored answer).
            available := COALESCE(h.settled_available,
                                  (h.decision #>> '{_settle,credits_remaining}')::bigint,
                                  a.balance - a.reserved);
        ELSE
            outcome := 'conflict';
        END IF;
        status := h.status;
        RETURN NEXT;
        RETURN;
    END IF;
    IF (a.next_event_at IS NOT NULL AND a.next_event_at <= p_now)
       OR h.status <> 'live' OR h.expires_at <= p_now THEN
        outcome := 'due';
        RETURN NEXT;
        RETURN;
    END IF;
    v_reserved := a.reserved - h.amount;
    IF p_commit THEN
        -- The lot (locked here, after the hold), the account and the charge in one statement.
        v_balance := a.balance - h.amount;
        v_charged := h.amount;
        WITH lot AS (
            UPDATE credits_lot
               SET remaining = remaining - h.amount, reserved = reserved - h.amount,
                   -- A claw-back owed on this lot can no longer count on this credit: it is
                   -- spent (as services._charge).
                   clawback_owed = LEAST(clawback_owed, reserved - h.amount),
                   clawback_uncollectable = clawback_uncollectable
                       + GREATEST(clawback_owed - (reserved - h.amount), 0)
             WHERE id = h.lot_id
        ), account AS (
            UPDATE credits_creditaccount
               SET balance = v_balance, reserved = v_reserved, consumed = consumed + h.amount,
                   -- The month's charges for the monthly limit (issue 18; 0 in a new month).
                   month_spent = CASE WHEN a.month_start = date_trunc('month', p_now, 'UTC')
                                      THEN a.month_spent ELSE 0 END + h.amount,
                   month_start = date_trunc('month', p_now, 'UTC'),
                   -- Auto top-up (issue 19, as services._auto_topup_mark): the charge that
                   -- takes the balance from at least the threshold to below it stamps the
                   -- account; the earliest stamp stays until payments claims it.
                   auto_topup_requested_at = CASE
                       WHEN a.balance >= a.auto_topup_threshold
                            AND v_balance < a.auto_topup_threshold
                       THEN COALESCE(auto_topup_requested_at, p_now)
                       ELSE auto_topup_requested_at END
             WHERE user_id = a.user_id
        )
        INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,
                                         idempotency_key, reference, reason, created_by_id,
                                         created_at)
        VALUES (a.user_id, h.lot_id, 'charge', -h.amount, v_balance, 'charge:' || h.id::text,
                'request:' || p_request_id, '', NULL, p_now);
        -- credits.low (issue 17): this charge takes the balance from at least the account's
        -- threshold (read with the locked row above) to below it. The twin of
        -- credits.notices.entry_notify: same cause (`credits.low:` + the entry's key), same
        -- data. A charge that crosses nothing runs no statement here.
        IF a.low_balance_threshold IS NOT NULL AND a.balance >= a.low_balance_threshold
           AND v_balance < a.low_balance_threshold THEN
            INSERT INTO credits_event (id, user_id, type, data, cause, created_at)
            VALUES (gen_random_uuid(), a.user_id, 'credits.low',
                    jsonb_build_object('balance', v_balance,
                                       'threshold', a.low_balance_threshold),
                    'credits.low:charge:' || h.id::text, p_now)
            ON CONFLICT (cause) DO NOTHING
            RETURNING id INTO v_event;
        END IF;
    ELSE
        -- A lot that expired meanwhile is left alone: the released credit needs its expire
        -- entry (services); so is a lot that owes a claw-back: the released credit is taken
        -- with a clawback entry (services). This is the first write, so the 'due' still
        -- writes nothing.
        UPDATE credits_lot SET reserved = reserved - h.amount
         WHERE id = h.lot_id AND (expires_at IS NULL OR expires_at > p_now)
           AND clawback_owed = 0
        RETURNING expires_at INTO v_lot_expires;
        IF NOT FOUND THEN
            outcome := 'due';
            RETURN NEXT;
            RETURN;
        END IF;
        v_balance := a.balance;
        v_charged := 0;
        -- The credit is unheld again in a lot that may expire: a recomputation made while the
        -- lot was fully held skipped it, so its expiry must be due again (as _release_hold).
        UPDATE credits_creditaccount
           SET reserved = v_reserved,
               next_event_at = CASE WHEN v_lot_expires IS NULL THEN next_event_at
                                    ELSE LEAST(next_event_at, v_lot_expires) END
         WHERE user_id = a.user_id;
    END IF;
    -- The key's spend counters (issue 18), locked last as in credits.locks: its live hold ends;
    -- a charge counts in each period counter, started again from 0 in a new day or month
    -- (as accounts.budgets.key_charge).
    UPDATE accounts_apikey
       SET held = held - h.amount,
           spent_day = CASE WHEN NOT p_commit THEN spent_day
                            WHEN spent_day_start = date_trunc('day', p_now, 'UTC')
                            THEN spent_day + h.amount ELSE h.amount END,
           spent_day_start = CASE WHEN p_commit THEN date_trunc('day', p_now, 'UTC')
                                  ELSE spent_day_start END,
           spent_month = CASE WHEN NOT p_commit THEN spent_month
                              WHEN spent_month_start = date_trunc('month', p_now, 'UTC')
                              THEN spent_month + h.amount ELSE h.amount END,
           spent_month_start = CASE WHEN p_commit THEN date_trunc('month', p_now, 'UTC')
                                    ELSE spent_month_start END,
           spent_total = spent_total + v_charged
     WHERE id = h.api_key_id;
    -- The hold and the usage record in one statement (the usage bucket trigger fires at its
    -- end, so the bucket row is still the last one locked).
    WITH hold AS (
        UPDATE credits_hold
           SET status = v_wanted, charged = v_charged, settled_at = p_now,
               settled_available = v_balance - v_reserved
         WHERE id = h.id
    )
    INSERT INTO credits_usagerecord (request_id, account_id, api_key_id, model, prompt_tokens,
                                     completion_tokens, outcome, reason, http_status, charged,
                                     settled_at)
    VALUES (p_request_id, a.user_id, h.api_key_id, p_model, p_prompt_tokens,
            p_completion_tokens, CASE WHEN p_commit THEN 'success' ELSE 'failure' END,
            p_reason, p_http_status, v_charged, p_now);
    -- Auto top-up: the caller kicks the payments app for this account (committed by then).
    IF p_commit AND a.balance >= a.auto_topup_threshold AND v_balance < a.auto_topup_threshold
    THEN
        auto_topup_user := a.user_id;
    END IF;
    outcome := 'ok';
    charged := v_charged;
    available := v_balance - v_reserved;
    status := v_wanted;
    event_id := v_event;  -- the caller sends `event_recorded` for it
    RETURN NEXT;
END;
$$;
