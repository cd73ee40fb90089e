"""The gateway's hot path: usage records, and (on PostgreSQL) one SQL function per database
round trip of `POST /internal/v1/authorize` and `POST /internal/v1/settle`.

The functions are a fast implementation of exactly what `credits.services.hold_create`,
`hold_commit` and `hold_release` do, for the common case only: an account with nothing due
(`next_event_at > now`), a live hold whose lot has not expired. In every other case they write
nothing and answer `due` / `fallback`, and the caller runs the Python services, so that expiry
logic lives in one place. They keep every figure `credits.reconciliation` checks: lot and
account `reserved`/`remaining`/`balance`/`consumed`, `next_event_at`, and the charge entry
(`charge:{hold_id}`, reference `request:{request_id}`, running `balance_after`). Lock order is
the services' own: the account row first, then its hold and lot rows. `now` is always a
parameter (the ledger's clock, which tests move). SQLite (the embedded default) runs the
services only.
"""

import django.db.models.deletion
from django.db import migrations, models

PG_FORWARD = r"""
-- Step 1 of authorize (read only, apart from last_used_at once a minute per key): the replay of
-- a request id, the key, and the account's state. No lock: step 2 re-checks under the lock.
CREATE FUNCTION gateway_authorize_check(p_request_id text, p_digest text, p_now timestamptz)
RETURNS TABLE(outcome text, key_id uuid, user_id uuid, balance integer, available integer,
              decision jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    h record;
    k record;
    a record;
BEGIN
    SELECT hd.api_key_id, hd.decision, kk.digest AS key_digest INTO h
      FROM credits_hold hd LEFT JOIN accounts_apikey kk ON kk.id = hd.api_key_id
     WHERE hd.request_id = p_request_id;
    IF FOUND THEN
        IF p_digest IS NOT NULL AND h.key_digest = p_digest THEN
            RETURN QUERY SELECT 'replay'::text, h.api_key_id, NULL::uuid, NULL::integer,
                                NULL::integer, h.decision;
        ELSE
            RETURN QUERY SELECT 'conflict'::text, NULL::uuid, NULL::uuid, NULL::integer,
                                NULL::integer, NULL::jsonb;
        END IF;
        RETURN;
    END IF;
    IF p_digest IS NULL THEN
        RETURN QUERY SELECT 'bad_key'::text, NULL::uuid, NULL::uuid, NULL::integer,
                            NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    SELECT kk.id, kk.user_id, kk.revoked_at, kk.expires_at, kk.last_used_at, u.is_active INTO k
      FROM accounts_apikey kk JOIN accounts_user u ON u.id = kk.user_id
     WHERE kk.digest = p_digest;
    IF NOT FOUND OR k.revoked_at IS NOT NULL OR NOT k.is_active
       OR (k.expires_at IS NOT NULL AND k.expires_at <= p_now) THEN
        RETURN QUERY SELECT 'bad_key'::text, NULL::uuid, NULL::uuid, NULL::integer,
                            NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    -- Same rule as accounts.api_keys.api_key_resolve: at most one write per key per minute.
    IF k.last_used_at IS NULL OR k.last_used_at <= p_now - interval '60 seconds' THEN
        UPDATE accounts_apikey SET last_used_at = p_now
         WHERE id = k.id
           AND (last_used_at IS NULL OR last_used_at <= p_now - interval '60 seconds');
    END IF;
    SELECT ca.balance, ca.reserved, ca.frozen_at, ca.next_event_at INTO a
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
        RETURN QUERY SELECT 'ok'::text, k.id, k.user_id, a.balance, a.balance - a.reserved,
                            NULL::jsonb;
    END IF;
END;
$$;

-- Step 2 of authorize, after the rate limiter counted the request: services.hold_create under
-- the account lock, storing the decision for replays. `p_decision` is complete except for
-- `credits_remaining` and its header, which only the locked account row can tell.
CREATE FUNCTION gateway_hold_create(p_request_id text, p_key_id uuid, p_user_id uuid,
                                    p_hold_id uuid, p_decision jsonb, p_now timestamptz,
                                    p_expires_at timestamptz)
RETURNS TABLE(outcome text, available integer, decision jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    a record;
    h record;
    v_lot bigint;
    v_available integer;
    v_decision jsonb;
BEGIN
    SELECT ca.balance, ca.reserved, ca.frozen_at, ca.next_event_at INTO a
      FROM credits_creditaccount ca WHERE ca.user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_credit'::text, 0, NULL::jsonb;
        RETURN;
    END IF;
    IF a.next_event_at IS NOT NULL AND a.next_event_at <= p_now THEN
        RETURN QUERY SELECT 'due'::text, NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    -- A concurrent authorize of the same request id on this account committed first.
    SELECT hd.api_key_id, hd.decision INTO h FROM credits_hold hd
     WHERE hd.request_id = p_request_id;
    IF FOUND THEN
        IF h.api_key_id = p_key_id THEN
            RETURN QUERY SELECT 'replay'::text, NULL::integer, h.decision;
        ELSE
            RETURN QUERY SELECT 'conflict'::text, NULL::integer, NULL::jsonb;
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
    v_decision := jsonb_set(
        jsonb_set(p_decision, '{credits_remaining}', to_jsonb(v_available)),
        '{headers,X-Credits-Remaining}', to_jsonb(v_available::text));
    -- The same request id on another account is not serialised by our account lock: the unique
    -- index decides, and the loser is told to look again (replay or conflict).
    INSERT INTO credits_hold (id, account_id, lot_id, request_id, amount, status, charged,
                              created_at, expires_at, settled_at, api_key_id, decision)
    VALUES (p_hold_id, p_user_id, v_lot, p_request_id, 1, 'live', 0, p_now, p_expires_at,
            NULL, p_key_id, v_decision)
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'retry'::text, NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    UPDATE credits_lot SET reserved = reserved + 1 WHERE id = v_lot;
    -- LEAST ignores NULL: an account with nothing scheduled gets this hold's expiry.
    UPDATE credits_creditaccount
       SET reserved = reserved + 1, next_event_at = LEAST(next_event_at, p_expires_at)
     WHERE user_id = p_user_id;
    RETURN QUERY SELECT 'ok'::text, v_available, v_decision;
END;
$$;

-- Authorize in one round trip, after the rate limiter counted the request (the caller knew the
-- key id and guessed the tier from the balance it saw last): step 1 and step 2 above in one
-- call, under the account lock. The contract's order holds because the caller only treats 'ok'
-- as final: any other answer (replay, conflict, a bad key, frozen, no credit, something due, or
-- a live balance outside the guessed tier's bounds, 'retier') writes nothing at all,
-- and the caller takes its count back and decides afresh the two-step way.
CREATE FUNCTION gateway_authorize(p_request_id text, p_digest text, p_key_id uuid,
                                  p_tier_min integer, p_tier_max integer, p_hold_id uuid,
                                  p_decision jsonb, p_now timestamptz,
                                  p_expires_at timestamptz)
RETURNS TABLE(outcome text, balance integer, available integer, decision jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    k record;
    a record;
    v_lot bigint;
    v_available integer;
    v_decision jsonb;
BEGIN
    -- A request id seen before (replay or conflict): the caller's two-step path answers it.
    PERFORM 1 FROM credits_hold hd WHERE hd.request_id = p_request_id;
    IF FOUND THEN
        RETURN QUERY SELECT 'seen'::text, NULL::integer, NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    SELECT kk.id, kk.user_id, kk.revoked_at, kk.expires_at, kk.last_used_at, u.is_active INTO k
      FROM accounts_apikey kk JOIN accounts_user u ON u.id = kk.user_id
     WHERE kk.digest = p_digest;
    IF NOT FOUND OR k.id <> p_key_id OR k.revoked_at IS NOT NULL OR NOT k.is_active
       OR (k.expires_at IS NOT NULL AND k.expires_at <= p_now) THEN
        RETURN QUERY SELECT 'bad_key'::text, NULL::integer, NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    SELECT ca.balance, ca.reserved, ca.frozen_at, ca.next_event_at INTO a
      FROM credits_creditaccount ca WHERE ca.user_id = k.user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_credit'::text, 0, 0, NULL::jsonb;
        RETURN;
    END IF;
    v_available := a.balance - a.reserved;
    IF a.next_event_at IS NOT NULL AND a.next_event_at <= p_now THEN
        RETURN QUERY SELECT 'due'::text, a.balance, v_available, NULL::jsonb;
        RETURN;
    END IF;
    IF a.frozen_at IS NOT NULL THEN
        RETURN QUERY SELECT 'frozen'::text, a.balance, v_available, NULL::jsonb;
        RETURN;
    END IF;
    IF v_available < 1 THEN
        RETURN QUERY SELECT 'no_credit'::text, a.balance, v_available, NULL::jsonb;
        RETURN;
    END IF;
    IF a.balance < p_tier_min OR (p_tier_max IS NOT NULL AND a.balance > p_tier_max) THEN
        RETURN QUERY SELECT 'retier'::text, a.balance, v_available, NULL::jsonb;
        RETURN;
    END IF;
    SELECT l.id INTO v_lot FROM credits_lot l
     WHERE l.account_id = k.user_id AND l.remaining > l.reserved
       AND (l.expires_at IS NULL OR l.expires_at > p_now)
     ORDER BY l.expires_at ASC NULLS LAST, l.id
     LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_credit'::text, a.balance, v_available, NULL::jsonb;
        RETURN;
    END IF;
    v_available := v_available - 1;
    v_decision := jsonb_set(
        jsonb_set(p_decision, '{credits_remaining}', to_jsonb(v_available)),
        '{headers,X-Credits-Remaining}', to_jsonb(v_available::text));
    INSERT INTO credits_hold (id, account_id, lot_id, request_id, amount, status, charged,
                              created_at, expires_at, settled_at, api_key_id, decision)
    VALUES (p_hold_id, k.user_id, v_lot, p_request_id, 1, 'live', 0, p_now, p_expires_at,
            NULL, k.id, v_decision)
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'seen'::text, NULL::integer, NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    -- Same rule as accounts.api_keys.api_key_resolve: at most one write per key per minute.
    IF k.last_used_at IS NULL OR k.last_used_at <= p_now - interval '60 seconds' THEN
        UPDATE accounts_apikey SET last_used_at = p_now
         WHERE id = k.id
           AND (last_used_at IS NULL OR last_used_at <= p_now - interval '60 seconds');
    END IF;
    UPDATE credits_lot SET reserved = reserved + 1 WHERE id = v_lot;
    UPDATE credits_creditaccount
       SET reserved = reserved + 1, next_event_at = LEAST(next_event_at, p_expires_at)
     WHERE user_id = k.user_id;
    RETURN QUERY SELECT 'ok'::text, a.balance, v_available, v_decision;
END;
$$;

-- Settle: services.hold_commit / hold_release plus the usage record, in one transaction.
-- Anything but a live, unexpired hold on an unexpired lot of an account with nothing due is
-- left to the services ('fallback'), before any write.
CREATE FUNCTION gateway_settle(p_request_id text, p_commit boolean, p_model text,
                               p_prompt_tokens integer, p_completion_tokens integer,
                               p_reason text, p_http_status integer, p_now timestamptz)
RETURNS TABLE(outcome text, charged integer, available integer, status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_account uuid;
    a record;
    h record;
    v_lot_expires timestamptz;
    v_balance integer;
    v_reserved integer;
    v_charged integer;
    v_status text;
    v_wanted text := CASE WHEN p_commit THEN 'committed' ELSE 'released' END;
BEGIN
    SELECT hd.account_id INTO v_account FROM credits_hold hd WHERE hd.request_id = p_request_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::integer, NULL::integer, NULL::text;
        RETURN;
    END IF;
    SELECT ca.balance, ca.reserved, ca.next_event_at INTO a
      FROM credits_creditaccount ca WHERE ca.user_id = v_account FOR UPDATE;
    SELECT hd.id, hd.lot_id, hd.amount, hd.status, hd.charged, hd.expires_at, hd.api_key_id,
           hd.decision
      INTO h FROM credits_hold hd WHERE hd.request_id = p_request_id FOR UPDATE;
    IF h.status IN ('committed', 'released') THEN
        IF h.status = v_wanted THEN
            RETURN QUERY SELECT 'replay'::text,
                h.charged::integer,
                COALESCE((h.decision #>> '{_settle,credits_remaining}')::integer,
                         a.balance - a.reserved),
                h.status::text;
        ELSE
            RETURN QUERY SELECT 'conflict'::text, NULL::integer, NULL::integer, h.status::text;
        END IF;
        RETURN;
    END IF;
    IF (a.next_event_at IS NOT NULL AND a.next_event_at <= p_now)
       OR h.status <> 'live' OR h.expires_at <= p_now THEN
        RETURN QUERY SELECT 'fallback'::text, NULL::integer, NULL::integer, NULL::text;
        RETURN;
    END IF;
    SELECT l.expires_at INTO v_lot_expires FROM credits_lot l WHERE l.id = h.lot_id FOR UPDATE;
    IF NOT p_commit AND v_lot_expires IS NOT NULL AND v_lot_expires <= p_now THEN
        -- The released credit's lot expired meanwhile: it needs its expire entry (services).
        RETURN QUERY SELECT 'fallback'::text, NULL::integer, NULL::integer, NULL::text;
        RETURN;
    END IF;
    v_reserved := a.reserved - h.amount;
    IF p_commit THEN
        v_balance := a.balance - h.amount;
        v_charged := h.amount;
        UPDATE credits_lot SET remaining = remaining - h.amount, reserved = reserved - h.amount
         WHERE id = h.lot_id;
        UPDATE credits_creditaccount
           SET balance = v_balance, reserved = v_reserved, consumed = consumed + h.amount
         WHERE user_id = v_account;
        INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,
                                         idempotency_key, reference, reason, created_by_id,
                                         created_at)
        VALUES (v_account, h.lot_id, 'charge', -h.amount, v_balance, 'charge:' || h.id::text,
                'request:' || p_request_id, '', NULL, p_now);
    ELSE
        v_balance := a.balance;
        v_charged := 0;
        UPDATE credits_lot SET reserved = reserved - h.amount WHERE id = h.lot_id;
        -- The credit is unheld again in a lot that may expire: a recomputation made while the
        -- lot was fully held skipped it, so its expiry must be due again (as _release_hold).
        UPDATE credits_creditaccount
           SET reserved = v_reserved,
               next_event_at = CASE WHEN v_lot_expires IS NULL THEN next_event_at
                                    ELSE LEAST(next_event_at, v_lot_expires) END
         WHERE user_id = v_account;
    END IF;
    UPDATE credits_hold
       SET status = v_wanted, charged = v_charged, settled_at = p_now,
           decision = COALESCE(decision, '{}'::jsonb) || jsonb_build_object('_settle',
               jsonb_build_object('charged', v_charged,
                                  'credits_remaining', v_balance - v_reserved))
     WHERE id = h.id;
    INSERT INTO credits_usagerecord (request_id, account_id, api_key_id, model, prompt_tokens,
                                     completion_tokens, outcome, reason, http_status, charged,
                                     settled_at)
    VALUES (p_request_id, v_account, h.api_key_id, p_model, p_prompt_tokens,
            p_completion_tokens, CASE WHEN p_commit THEN 'success' ELSE 'failure' END,
            p_reason, p_http_status, v_charged, p_now);
    RETURN QUERY SELECT 'ok'::text, v_charged, v_balance - v_reserved, v_wanted;
END;
$$;
"""

PG_REVERSE = """
DROP FUNCTION IF EXISTS gateway_authorize(text, text, uuid, integer, integer, uuid, jsonb,
                                          timestamptz, timestamptz);
DROP FUNCTION IF EXISTS gateway_settle(text, boolean, text, integer, integer, text, integer,
                                       timestamptz);
DROP FUNCTION IF EXISTS gateway_hold_create(text, uuid, uuid, uuid, jsonb, timestamptz,
                                            timestamptz);
DROP FUNCTION IF EXISTS gateway_authorize_check(text, text, timestamptz);
"""


def forward_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, None)


def reverse_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_REVERSE, None)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("credits", "0002_ledger_append_only_and_seed"),
    ]

    operations = [
        migrations.CreateModel(
            name="UsageRecord",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("request_id", models.CharField(max_length=128, unique=True)),
                ("model", models.CharField(blank=True, max_length=64)),
                ("prompt_tokens", models.PositiveIntegerField(default=0)),
                ("completion_tokens", models.PositiveIntegerField(default=0)),
                (
                    "outcome",
                    models.CharField(
                        choices=[("success", "Success"), ("failure", "Failure")], max_length=16
                    ),
                ),
                ("reason", models.CharField(blank=True, max_length=64)),
                ("http_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("charged", models.PositiveSmallIntegerField()),
                ("settled_at", models.DateTimeField()),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage_records",
                        to="credits.creditaccount",
                    ),
                ),
                (
                    "api_key",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="accounts.apikey",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["account", "settled_at"], name="usage_account_settled")
                ],
            },
        ),
        migrations.RunPython(forward_functions, reverse_functions),
    ]
