"""Less work per gateway request: fewer CHECKs, indexes and statements on the hot path.

Every INSERT or UPDATE makes PostgreSQL parse and evaluate each CHECK of the table anew, write an
entry in each of its indexes (all of them when the update is not HOT), and every statement of a
PL/pgSQL function sets up its own executor. So:

- CHECKs: the implicit ones of `Positive*Field`s that a named constraint already implies are
  gone (the fields are plain integers now), and a named constraint no longer repeats a bound the
  column's own CHECK keeps (`lot_remaining_within_granted`). Usage records keep their counts
  non-negative with one named CHECK instead of four implicit ones. Every invariant is still a
  CHECK.
- Indexes: no `_like` (varchar_pattern_ops) twins for unique columns only ever matched whole
  (UniqueConstraint instead of `unique=True`); the ledger's idempotency key, which
  `credits_adjust` also matches by prefix, has one unique pattern-ops index serving both; no
  plain FK index where a composite index starts with the same column; no index on holds'
  `lot`/`api_key` (nothing looks holds up by either, and neither is ever deleted).
- `gateway_authorize` and `gateway_settle` do the same with fewer statements (below). The
  two-step functions of 0003 are unchanged: their `ON CONFLICT (request_id)` infers the new
  unique constraint as it did the old one.

The reverse restores 0003's functions exactly (drop and re-create all four).

SQLite (the embedded default) alters a table by re-creating it, which drops the triggers on it
and refuses to rename a table that another table's trigger names: the usage bucket triggers of
0005 are dropped first and re-created last, on SQLite only.
"""

import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# Both answer exactly as 0003's versions for the caller; only 'ok' (authorize) writes, and
# settle still answers 'fallback' before any write. The lock order stays the services' own:
# the account row first, then the hold, then the lot (then the usage bucket, in the trigger).
PG_FORWARD = r"""
CREATE OR REPLACE FUNCTION gateway_authorize(p_request_id text, p_digest text, p_key_id uuid,
                                  p_tier_min integer, p_tier_max integer, p_hold_id uuid,
                                  p_decision jsonb, p_now timestamptz,
                                  p_expires_at timestamptz)
RETURNS TABLE(outcome text, balance integer, available integer, decision jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    k record;
    v_lot bigint;
    v_available integer;
    v_decision jsonb;
BEGIN
    -- No look-up of the request id first: a request id seen before makes the INSERT below do
    -- nothing (ON CONFLICT), and any answer but 'ok' sends the caller down the two-step path,
    -- which tells replay from conflict. The key, its user and the locked account in one
    -- statement (the account is locked even for a key refused just below; nothing is written).
    SELECT kk.id, kk.user_id, kk.revoked_at, kk.expires_at, kk.last_used_at, u.is_active,
           a.user_id IS NOT NULL AS has_account, a.balance, a.reserved, a.frozen_at,
           a.next_event_at
      INTO k
      FROM accounts_apikey kk
      JOIN accounts_user u ON u.id = kk.user_id
      LEFT JOIN LATERAL (
          SELECT ca.user_id, ca.balance, ca.reserved, ca.frozen_at, ca.next_event_at
            FROM credits_creditaccount ca WHERE ca.user_id = kk.user_id FOR UPDATE
      ) a ON true
     WHERE kk.digest = p_digest;
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
    ELSIF k.balance < p_tier_min OR (p_tier_max IS NOT NULL AND k.balance > p_tier_max) THEN
        outcome := 'retier';
    END IF;
    IF outcome IS NOT NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_available := available - 1;
    v_decision := jsonb_set(
        jsonb_set(p_decision, '{credits_remaining}', to_jsonb(v_available)),
        '{headers,X-Credits-Remaining}', to_jsonb(v_available::text));
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
        INSERT INTO credits_hold (id, account_id, lot_id, request_id, amount, status, charged,
                                  created_at, expires_at, settled_at, api_key_id, decision)
        SELECT p_hold_id, k.user_id, lot.id, p_request_id, 1, 'live', 0, p_now, p_expires_at,
               NULL, k.id, v_decision
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
    -- Same rule as accounts.api_keys.api_key_resolve: at most one write per key per minute.
    IF k.last_used_at IS NULL OR k.last_used_at <= p_now - interval '60 seconds' THEN
        UPDATE accounts_apikey SET last_used_at = p_now
         WHERE id = k.id
           AND (last_used_at IS NULL OR last_used_at <= p_now - interval '60 seconds');
    END IF;
    -- The answer through the OUT parameters and RETURN NEXT: no query to run for it.
    outcome := 'ok';
    available := v_available;
    decision := v_decision;
    RETURN NEXT;
END;
$$;

CREATE OR REPLACE FUNCTION gateway_settle(p_request_id text, p_commit boolean, p_model text,
                               p_prompt_tokens integer, p_completion_tokens integer,
                               p_reason text, p_http_status integer, p_now timestamptz)
RETURNS TABLE(outcome text, charged integer, available integer, status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    a record;
    h record;
    v_lot_expires timestamptz;
    v_balance integer;
    v_reserved integer;
    v_charged integer;
    v_wanted text := CASE WHEN p_commit THEN 'committed' ELSE 'released' END;
BEGIN
    -- The hold's account, locked first, in one statement.
    SELECT ca.user_id, ca.balance, ca.reserved, ca.next_event_at INTO a
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
           hd.decision
      INTO h FROM credits_hold hd WHERE hd.request_id = p_request_id FOR UPDATE;
    IF h.status IN ('committed', 'released') THEN
        IF h.status = v_wanted THEN
            outcome := 'replay';
            charged := h.charged;
            available := COALESCE((h.decision #>> '{_settle,credits_remaining}')::integer,
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
        outcome := 'fallback';
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
               SET remaining = remaining - h.amount, reserved = reserved - h.amount
             WHERE id = h.lot_id
        ), account AS (
            UPDATE credits_creditaccount
               SET balance = v_balance, reserved = v_reserved, consumed = consumed + h.amount
             WHERE user_id = a.user_id
        )
        INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,
                                         idempotency_key, reference, reason, created_by_id,
                                         created_at)
        VALUES (a.user_id, h.lot_id, 'charge', -h.amount, v_balance, 'charge:' || h.id::text,
                'request:' || p_request_id, '', NULL, p_now);
    ELSE
        -- A lot that expired meanwhile is left alone: the released credit needs its expire
        -- entry (services). This is the first write, so the 'fallback' still writes nothing.
        UPDATE credits_lot SET reserved = reserved - h.amount
         WHERE id = h.lot_id AND (expires_at IS NULL OR expires_at > p_now)
        RETURNING expires_at INTO v_lot_expires;
        IF NOT FOUND THEN
            outcome := 'fallback';
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
    -- The hold and the usage record in one statement (the usage bucket trigger fires at its
    -- end, so the bucket row is still the last one locked).
    WITH hold AS (
        UPDATE credits_hold
           SET status = v_wanted, charged = v_charged, settled_at = p_now,
               decision = COALESCE(decision, '{}'::jsonb) || jsonb_build_object('_settle',
                   jsonb_build_object('charged', v_charged,
                                      'credits_remaining', v_balance - v_reserved))
         WHERE id = h.id
    )
    INSERT INTO credits_usagerecord (request_id, account_id, api_key_id, model, prompt_tokens,
                                     completion_tokens, outcome, reason, http_status, charged,
                                     settled_at)
    VALUES (p_request_id, a.user_id, h.api_key_id, p_model, p_prompt_tokens,
            p_completion_tokens, CASE WHEN p_commit THEN 'success' ELSE 'failure' END,
            p_reason, p_http_status, v_charged, p_now);
    outcome := 'ok';
    charged := v_charged;
    available := v_balance - v_reserved;
    status := v_wanted;
    RETURN NEXT;
END;
$$;
"""

_0003 = importlib.import_module("credits.migrations.0003_gateway")
_0005 = importlib.import_module("credits.migrations.0005_usage_buckets")


def forward_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, None)


def reverse_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_0003.PG_REVERSE, None)
        schema_editor.execute(_0003.PG_FORWARD, None)


def sqlite_bucket_triggers_drop(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in _0005.SQLITE_REVERSE:
            schema_editor.execute(sql, None)


def sqlite_bucket_triggers_create(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in _0005.SQLITE_FORWARD:
            schema_editor.execute(sql, None)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0002_apikey_lean_indexes'),
        ('credits', '0006_ledger_permissions_and_dashboard_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(sqlite_bucket_triggers_drop, sqlite_bucket_triggers_create),
        migrations.RemoveConstraint(
            model_name='hold',
            name='hold_charged_within_amount',
        ),
        migrations.RemoveConstraint(
            model_name='lot',
            name='lot_remaining_within_granted',
        ),
        migrations.RemoveConstraint(
            model_name='usagebucket',
            name='usagebucket_credits_within_requests',
        ),
        migrations.AlterField(
            model_name='hold',
            name='amount',
            field=models.SmallIntegerField(default=1),
        ),
        migrations.AlterField(
            model_name='hold',
            name='api_key',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.apikey'),
        ),
        migrations.AlterField(
            model_name='hold',
            name='charged',
            field=models.SmallIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name='hold',
            name='lot',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='holds', to='credits.lot'),
        ),
        migrations.AlterField(
            model_name='hold',
            name='request_id',
            field=models.CharField(max_length=128),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='account',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='entries', to='credits.creditaccount'),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='idempotency_key',
            field=models.CharField(max_length=200),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='reference',
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AlterField(
            model_name='lot',
            name='granted',
            field=models.IntegerField(),
        ),
        migrations.AlterField(
            model_name='lot',
            name='reserved',
            field=models.IntegerField(default=0),
        ),
        migrations.AlterField(
            model_name='usagebucket',
            name='credits',
            field=models.IntegerField(default=0, help_text='Charged requests.'),
        ),
        migrations.AlterField(
            model_name='usagebucket',
            name='requests',
            field=models.IntegerField(default=0, help_text='Settled requests.'),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='account',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='usage_records', to='credits.creditaccount'),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='charged',
            field=models.SmallIntegerField(),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='completion_tokens',
            field=models.IntegerField(default=0),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='http_status',
            field=models.SmallIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='prompt_tokens',
            field=models.IntegerField(default=0),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='request_id',
            field=models.CharField(max_length=128),
        ),
        migrations.AddIndex(
            model_name='ledgerentry',
            index=models.Index(fields=['reference'], name='entry_reference'),
        ),
        migrations.AddConstraint(
            model_name='hold',
            constraint=models.UniqueConstraint(fields=('request_id',), name='hold_unique_request_id'),
        ),
        migrations.AddConstraint(
            model_name='hold',
            constraint=models.CheckConstraint(condition=models.Q(('charged__gte', 0), ('charged__lte', models.F('amount'))), name='hold_charged_within_amount'),
        ),
        migrations.AddConstraint(
            model_name='ledgerentry',
            constraint=models.UniqueConstraint(fields=('idempotency_key',), name='entry_unique_idempotency_key', opclasses=['varchar_pattern_ops']),
        ),
        migrations.AddConstraint(
            model_name='lot',
            constraint=models.CheckConstraint(condition=models.Q(('remaining__lte', models.F('granted'))), name='lot_remaining_within_granted'),
        ),
        migrations.AddConstraint(
            model_name='usagebucket',
            constraint=models.CheckConstraint(condition=models.Q(('credits__gte', 0), ('credits__lte', models.F('requests'))), name='usagebucket_credits_within_requests'),
        ),
        migrations.AddConstraint(
            model_name='usagerecord',
            constraint=models.UniqueConstraint(fields=('request_id',), name='usage_unique_request_id'),
        ),
        migrations.AddConstraint(
            model_name='usagerecord',
            constraint=models.CheckConstraint(condition=models.Q(('prompt_tokens__gte', 0), ('completion_tokens__gte', 0), ('charged__gte', 0), ('http_status__gte', 0)), name='usage_counts_not_negative'),
        ),
        migrations.RunPython(sqlite_bucket_triggers_create, sqlite_bucket_triggers_drop),
        migrations.RunPython(forward_functions, reverse_functions),
    ]
