CREATE OR REPLACE FUNCTION gateway_authorize(p_request_id text, p_digest text, p_key_id uuid,
                                  p_tier_min integer, p_tier_max integer, p_hold_id uuid,
                                  p_format smallint, p_tier text, p_window smallint,
                                  p_limit integer, p_remaining integer, p_now timestamptz,
                                  p_expires_at timestamptz, p_model text)
RETURNS TABLE(outcome text, balance bigint, available bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    k record;
    c record;
    v_lot bigint;
    v_available bigint;
BEGIN
    -- No look-up of the request id first: a request id seen before makes the INSERT below do
    -- nothing (ON CONFLICT), and any answer but 'ok' sends the caller down the two-step path,
    -- which tells replay from conflict. The key, its user and the locked account in one
    -- statement (the account is locked even for a key refused just below; nothing is written).
    SELECT kk.id, kk.user_id, kk.revoked_at, kk.expires_at, kk.last_used_at, u.is_active,
           a.user_id IS NOT NULL AS has_account, a.balance, a.reserved, a.frozen_at,
           a.next_event_at, a.monthly_credit_limit, a.month_spent, a.month_start
      INTO k
      FROM accounts_apikey kk
      JOIN accounts_user u ON u.id = kk.user_id
      LEFT JOIN LATERAL (
          SELECT ca.user_id, ca.balance, ca.reserved, ca.frozen_at, ca.next_event_at,
                 ca.monthly_credit_limit, ca.month_spent, ca.month_start
            FROM credits_creditaccount ca WHERE ca.user_id = kk.user_id FOR UPDATE
      ) a ON true
     -- The key by its secret, or by the secret it had before its last rotation while that is in
     -- its grace period (issue 18). UNION ALL ... LIMIT 1 probes the second index only when
     -- the first finds nothing: the common case is still one index probe.
     WHERE kk.id = (SELECT x.id FROM accounts_apikey x WHERE x.digest = p_digest
                    UNION ALL
                    SELECT x.id FROM accounts_apikey x
                     WHERE x.previous_digest = p_digest AND x.previous_expires_at > p_now
                    LIMIT 1);
    IF NOT FOUND OR k.id <> p_key_id OR k.revoked_at IS NOT NULL OR NOT k.is_active
       OR (k.expires_at IS NOT NULL AND k.expires_at <= p_now) THEN
        outcome := 'bad_key';
        RETURN NEXT;
        RETURN;
    END IF;
    IF NOT k.has_account THEN
        outcome := 'no_credit'; balance := 0; available := 0;
        RETURN NEXT;
        RETURN;
    END IF;
    balance := k.balance;
    available := k.balance - k.reserved;
    IF k.next_event_at IS NOT NULL AND k.next_event_at <= p_now THEN
        outcome := 'due';
    ELSIF k.frozen_at IS NOT NULL THEN
        outcome := 'frozen';
    ELSIF available < 1 THEN
        outcome := 'no_credit';
    ELSE
        -- Spend controls (issue 18), in the contract's order after the credit check. The
        -- key's counters are read here, in a statement of their own: the statement above took
        -- its snapshot before it waited for the account lock, and only the locked row is read
        -- again after the wait (a concurrent settle may have changed the key meanwhile; the
        -- race test found 53 of a budget of 37 allowed when they were read there).
        SELECT kk.budget_credits, kk.budget_period, kk.held, kk.spent_day, kk.spent_day_start,
               kk.spent_month, kk.spent_month_start, kk.spent_total, kk.allowed_models INTO c
          FROM accounts_apikey kk WHERE kk.id = k.id;
        outcome := gateway_spend_check(p_now, k.monthly_credit_limit, k.month_spent,
                                       k.month_start, k.reserved, c.budget_credits,
                                       c.budget_period, c.held, c.spent_day,
                                       c.spent_day_start, c.spent_month, c.spent_month_start,
                                       c.spent_total, c.allowed_models, p_model);
    END IF;
    IF outcome IS NULL
       AND (k.balance < p_tier_min OR (p_tier_max IS NOT NULL AND k.balance > p_tier_max)) THEN
        outcome := 'retier';
    END IF;
    IF outcome IS NOT NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_available := available - 1;
    -- One statement: lock the lot to draw from (burn-down order: soonest expiry first,
    -- never-expiring last, ties to the oldest grant; `remaining > 0`, implied by the others,
    -- lets the `lot_spendable` index serve it), insert the hold, and only if it was inserted
    -- reserve its credit in the lot and the account. A request id seen before (the unique
    -- constraint decides, as in 0003) inserts nothing, so writes nothing.
    WITH lot AS (
        SELECT l.id FROM credits_lot l
         WHERE l.account_id = k.user_id AND l.remaining > 0 AND l.remaining > l.reserved
           AND (l.expires_at IS NULL OR l.expires_at > p_now)
         ORDER BY l.expires_at ASC NULLS LAST, l.id
         LIMIT 1 FOR UPDATE
    ), hold AS (
        -- Not the answer itself: what it is rebuilt from on a replay (p_format .. p_remaining,
        -- credits.gateway.decisions.AnswerShape, and the credits remaining after this hold).
        INSERT INTO credits_hold (id, account_id, lot_id, request_id, amount, status, charged,
                                  created_at, expires_at, settled_at, api_key_id,
                                  answer_available, answer_limit, answer_remaining,
                                  answer_window, answer_format, answer_tier)
        SELECT p_hold_id, k.user_id, lot.id, p_request_id, 1, 'live', 0, p_now, p_expires_at,
               NULL, k.id, v_available, p_limit, p_remaining, p_window, p_format, p_tier
          FROM lot
        ON CONFLICT (request_id) DO NOTHING
        RETURNING lot_id
    ), lot_reserved AS (
        UPDATE credits_lot l SET reserved = l.reserved + 1 FROM hold WHERE l.id = hold.lot_id
    ), account_reserved AS (
        UPDATE credits_creditaccount ca
           SET reserved = ca.reserved + 1, next_event_at = LEAST(ca.next_event_at, p_expires_at)
          FROM hold WHERE ca.user_id = k.user_id
    )
    SELECT hold.lot_id INTO v_lot FROM hold;
    IF NOT FOUND THEN
        -- Nothing written: the request id was seen before, or no lot has unheld credit.
        PERFORM 1 FROM credits_hold hd WHERE hd.request_id = p_request_id;
        IF FOUND THEN
            outcome := 'seen'; balance := NULL; available := NULL;
        ELSE
            outcome := 'no_credit';
        END IF;
        RETURN NEXT;
        RETURN;
    END IF;
    -- The key's live holds (its budget counts them), and `last_used_at` by the rule of
    -- accounts.api_keys.api_key_resolve (at most one change per key per minute), in one write.
    UPDATE accounts_apikey
       SET held = held + 1,
           last_used_at = CASE WHEN last_used_at IS NULL
                                    OR last_used_at <= p_now - interval '60 seconds'
                               THEN p_now ELSE last_used_at END
     WHERE id = k.id;
    -- The answer through the OUT parameters and RETURN NEXT: no query to run for it.
    outcome := 'ok';
    available := v_available;
    RETURN NEXT;
END;
$$;
