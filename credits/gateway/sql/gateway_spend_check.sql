-- The spend controls of authorize (issue 18), after the credit check, in the contract's order:
-- the account's monthly limit, the key's budget, the key's allowed models. NULL when all pass,
-- else the outcome. The same rules as credits.services.hold_create (accounts.budgets); called by
-- gateway_authorize, gateway_authorize_check and gateway_hold_create with the rows they read.
-- A limit counts the period's charges (counters on the account and key rows, read as 0 once
-- their period has passed: UTC calendar day or month) plus what live holds may still charge
-- (`reserved` for the account, `held` for the key): no SUM over usage.
CREATE FUNCTION gateway_spend_check(p_now timestamptz, p_limit bigint, p_month_spent bigint,
                                    p_month_start timestamptz, p_reserved bigint,
                                    p_budget bigint, p_period text, p_held bigint,
                                    p_spent_day bigint, p_spent_day_start timestamptz,
                                    p_spent_month bigint, p_spent_month_start timestamptz,
                                    p_spent_total bigint, p_allowed_models jsonb, p_model text)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_limit IS NOT NULL
             AND (CASE WHEN p_month_start = date_trunc('month', p_now, 'UTC') THEN p_month_spent
                       ELSE 0 END) + p_reserved + 1 > p_limit
            THEN 'account_limit'
        WHEN p_budget IS NOT NULL
             AND (CASE p_period
                    WHEN 'day' THEN CASE WHEN p_spent_day_start = date_trunc('day', p_now, 'UTC')
                                         THEN p_spent_day ELSE 0 END
                    WHEN 'month' THEN CASE WHEN p_spent_month_start
                                                = date_trunc('month', p_now, 'UTC')
                                           THEN p_spent_month ELSE 0 END
                    ELSE p_spent_total END) + p_held + 1 > p_budget
            THEN 'key_budget'
        WHEN p_allowed_models IS NOT NULL AND NOT COALESCE(p_allowed_models ? p_model, false)
            THEN 'model_not_allowed'
    END
$$;
