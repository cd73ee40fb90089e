-- Step 2 of authorize, after the rate limiter counted the request: services.hold_create under
-- the account lock, storing what the answer is rebuilt from for replays (`p_format` ..
-- `p_remaining`: credits.gateway.decisions.AnswerShape) and the credits remaining after the
-- hold, which only the locked account row can tell.
CREATE FUNCTION gateway_hold_create(p_request_id text, p_key_id uuid, p_user_id uuid,
                                    p_hold_id uuid, p_format smallint, p_tier text,
                                    p_window smallint, p_limit integer, p_remaining integer,
                                    p_now timestamptz, p_expires_at timestamptz, p_model text)
RETURNS TABLE(outcome text, available bigint, decision jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    a record;
    h record;
    k record;
    v_spend text;
    v_lot bigint;
    v_available bigint;
BEGIN
    SELECT ca.balance, ca.reserved, ca.frozen_at, ca.next_event_at, ca.monthly_credit_limit,
           ca.month_spent, ca.month_start INTO a
      FROM credits_creditaccount ca WHERE ca.user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_credit'::text, 0, NULL::jsonb;
        RETURN;
    END IF;
    IF a.next_event_at IS NOT NULL AND a.next_event_at <= p_now THEN
        RETURN QUERY SELECT 'due'::text, NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    -- A concurrent authorize of the same request id on this account committed first.
    SELECT hd.api_key_id,
           COALESCE(hd.decision, jsonb_build_object(
               'hold_id', hd.id, 'expires_at', hd.expires_at, 'user_id', hd.account_id,
               'key_id', hd.api_key_id, 'created_at', hd.created_at,
               'format', hd.answer_format, 'tier', hd.answer_tier, 'window', hd.answer_window,
               'limit', hd.answer_limit, 'remaining', hd.answer_remaining,
               'available', hd.answer_available)) AS decision
      INTO h FROM credits_hold hd
     WHERE hd.request_id = p_request_id;
    IF FOUND THEN
        IF h.api_key_id = p_key_id THEN
            RETURN QUERY SELECT 'replay'::text, NULL::bigint, h.decision;
        ELSE
            RETURN QUERY SELECT 'conflict'::text, NULL::bigint, NULL::jsonb;
        END IF;
        RETURN;
    END IF;
    v_available := a.balance - a.reserved;
    IF a.frozen_at IS NOT NULL THEN
        RETURN QUERY SELECT 'frozen'::text, v_available, NULL::jsonb;
        RETURN;
    END IF;
    IF v_available < 1 THEN
        RETURN QUERY SELECT 'no_credit'::text, v_available, NULL::jsonb;
        RETURN;
    END IF;
    -- Spend controls (issue 18), under the account lock: the key's counters change only under
    -- it, so reading the key row unlocked here is exact.
    SELECT kk.budget_credits, kk.budget_period, kk.held, kk.spent_day, kk.spent_day_start,
           kk.spent_month, kk.spent_month_start, kk.spent_total, kk.allowed_models INTO k
      FROM accounts_apikey kk WHERE kk.id = p_key_id;
    v_spend := gateway_spend_check(p_now, a.monthly_credit_limit, a.month_spent, a.month_start,
                                   a.reserved, k.budget_credits, k.budget_period, k.held,
                                   k.spent_day, k.spent_day_start, k.spent_month,
                                   k.spent_month_start, k.spent_total, k.allowed_models,
                                   p_model);
    IF v_spend IS NOT NULL THEN
        RETURN QUERY SELECT v_spend, v_available, NULL::jsonb;
        RETURN;
    END IF;
    -- Burn-down order: soonest expiry first, never-expiring last, ties to the oldest grant.
    SELECT l.id INTO v_lot FROM credits_lot l
     WHERE l.account_id = p_user_id AND l.remaining > l.reserved
       AND (l.expires_at IS NULL OR l.expires_at > p_now)
     ORDER BY l.expires_at ASC NULLS LAST, l.id
     LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_credit'::text, v_available, NULL::jsonb;
        RETURN;
    END IF;
    v_available := v_available - 1;
    -- The same request id on another account is not serialised by our account lock: the unique
    -- index decides, and the loser is told to look again (replay or conflict).
    INSERT INTO credits_hold (id, account_id, lot_id, request_id, amount, status, charged,
                              created_at, expires_at, settled_at, api_key_id, answer_available,
                              answer_limit, answer_remaining, answer_window, answer_format,
                              answer_tier)
    VALUES (p_hold_id, p_user_id, v_lot, p_request_id, 1, 'live', 0, p_now, p_expires_at,
            NULL, p_key_id, v_available, p_limit, p_remaining, p_window, p_format, p_tier)
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'retry'::text, NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    UPDATE credits_lot SET reserved = reserved + 1 WHERE id = v_lot;
    UPDATE accounts_apikey SET held = held + 1 WHERE id = p_key_id;  -- the key's live holds
    -- LEAST ignores NULL: an account with nothing scheduled gets this hold's expiry.
    UPDATE credits_creditaccount
       SET reserved = reserved + 1, next_event_at = LEAST(next_event_at, p_expires_at)
     WHERE user_id = p_user_id;
    RETURN QUERY SELECT 'ok'::text, v_available, NULL::jsonb;
END;
$$;
