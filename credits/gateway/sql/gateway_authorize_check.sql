-- Step 1 of authorize (read only, apart from last_used_at once a minute per key): the replay of
-- a request id, the key, and the account's state. No lock: step 2 re-checks under the lock.
CREATE FUNCTION gateway_authorize_check(p_request_id text, p_digest text, p_now timestamptz,
                                        p_model text)
RETURNS TABLE(outcome text, key_id uuid, user_id uuid, balance bigint, available bigint,
              decision jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    h record;
    k record;
    a record;
BEGIN
    -- The answer to replay: the one stored before issue 23, or the hold's values it is rebuilt
    -- from (credits.gateway.decisions.replayed).
    SELECT hd.api_key_id, kk.digest AS key_digest,
           kk.previous_digest AS key_previous, kk.previous_expires_at AS key_previous_expires,
           COALESCE(hd.decision, jsonb_build_object(
               'hold_id', hd.id, 'expires_at', hd.expires_at, 'user_id', hd.account_id,
               'key_id', hd.api_key_id, 'created_at', hd.created_at,
               'format', hd.answer_format, 'tier', hd.answer_tier, 'window', hd.answer_window,
               'limit', hd.answer_limit, 'remaining', hd.answer_remaining,
               'available', hd.answer_available)) AS decision
      INTO h
      FROM credits_hold hd LEFT JOIN accounts_apikey kk ON kk.id = hd.api_key_id
     WHERE hd.request_id = p_request_id;
    IF FOUND THEN
        -- The same key replays, by its secret or by its previous one in the grace period.
        IF p_digest IS NOT NULL
           AND (h.key_digest = p_digest
                OR (h.key_previous = p_digest AND h.key_previous_expires > p_now)) THEN
            RETURN QUERY SELECT 'replay'::text, h.api_key_id, NULL::uuid, NULL::bigint,
                                NULL::bigint, h.decision;
        ELSE
            RETURN QUERY SELECT 'conflict'::text, NULL::uuid, NULL::uuid, NULL::bigint,
                                NULL::bigint, NULL::jsonb;
        END IF;
        RETURN;
    END IF;
    IF p_digest IS NULL THEN
        RETURN QUERY SELECT 'bad_key'::text, NULL::uuid, NULL::uuid, NULL::bigint,
                            NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    SELECT kk.id, kk.user_id, kk.revoked_at, kk.expires_at, kk.last_used_at, u.is_active,
           kk.budget_credits, kk.budget_period, kk.held, kk.spent_day, kk.spent_day_start,
           kk.spent_month, kk.spent_month_start, kk.spent_total, kk.allowed_models INTO k
      FROM accounts_apikey kk JOIN accounts_user u ON u.id = kk.user_id
     -- By its secret, or its previous secret in the grace period (as gateway_authorize).
     WHERE kk.id = (SELECT x.id FROM accounts_apikey x WHERE x.digest = p_digest
                    UNION ALL
                    SELECT x.id FROM accounts_apikey x
                     WHERE x.previous_digest = p_digest AND x.previous_expires_at > p_now
                    LIMIT 1);
    IF NOT FOUND OR k.revoked_at IS NOT NULL OR NOT k.is_active
       OR (k.expires_at IS NOT NULL AND k.expires_at <= p_now) THEN
        RETURN QUERY SELECT 'bad_key'::text, NULL::uuid, NULL::uuid, NULL::bigint,
                            NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    -- Same rule as accounts.api_keys.api_key_resolve: at most one write per key per minute.
    IF k.last_used_at IS NULL OR k.last_used_at <= p_now - interval '60 seconds' THEN
        UPDATE accounts_apikey SET last_used_at = p_now
         WHERE id = k.id
           AND (last_used_at IS NULL OR last_used_at <= p_now - interval '60 seconds');
    END IF;
    SELECT ca.balance, ca.reserved, ca.frozen_at, ca.next_event_at, ca.monthly_credit_limit,
           ca.month_spent, ca.month_start INTO a
      FROM credits_creditaccount ca WHERE ca.user_id = k.user_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_credit'::text, k.id, k.user_id, 0, 0, NULL::jsonb;
        RETURN;
    END IF;
    IF a.next_event_at IS NOT NULL AND a.next_event_at <= p_now THEN
        RETURN QUERY SELECT 'due'::text, k.id, k.user_id, a.balance, a.balance - a.reserved,
                            NULL::jsonb;
    ELSIF a.frozen_at IS NOT NULL THEN
        RETURN QUERY SELECT 'frozen'::text, k.id, k.user_id, a.balance, a.balance - a.reserved,
                            NULL::jsonb;
    ELSIF a.balance - a.reserved < 1 THEN
        RETURN QUERY SELECT 'no_credit'::text, k.id, k.user_id, a.balance,
                            a.balance - a.reserved, NULL::jsonb;
    ELSE
        -- Spend controls (issue 18); NULL: all pass.
        RETURN QUERY SELECT COALESCE(
                                gateway_spend_check(p_now, a.monthly_credit_limit, a.month_spent,
                                                    a.month_start, a.reserved, k.budget_credits,
                                                    k.budget_period, k.held, k.spent_day,
                                                    k.spent_day_start, k.spent_month,
                                                    k.spent_month_start, k.spent_total,
                                                    k.allowed_models, p_model),
                                'ok'),
                            k.id, k.user_id, a.balance, a.balance - a.reserved, NULL::jsonb;
    END IF;
END;
$$;
