"""Hourly usage buckets, kept by the database: an AFTER INSERT trigger on credits_usagerecord
(created by 0003_gateway) upserts the bucket of every settled request in the settle's own
transaction (see credits/models/usage_buckets.py for the design).

A request counts once in `requests`; `credits` adds its `charged` (0 or 1); its tokens are added
only when it was charged. The hour is the start of the UTC hour of `settled_at`.

PostgreSQL: one PL/pgSQL function, INSERT ... ON CONFLICT DO UPDATE against the partial unique
index that fits the row (keyed or keyless). SQLite (3.24+ allows UPSERT inside trigger bodies):
two triggers, one per branch, chosen by their WHEN clause.
"""

import django.db.models.deletion
from django.db import migrations, models

PG_FORWARD = """
CREATE FUNCTION credits_usage_bucket_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- date_trunc with an explicit zone: the bucket is the UTC hour whatever the session's
    -- TimeZone is (a psql session in Asia/Kolkata would otherwise cut hours at :30).
    bucket_hour timestamptz := date_trunc('hour', NEW.settled_at, 'UTC');
    charged_prompt bigint := CASE WHEN NEW.charged > 0 THEN NEW.prompt_tokens ELSE 0 END;
    charged_completion bigint := CASE WHEN NEW.charged > 0 THEN NEW.completion_tokens ELSE 0 END;
BEGIN
    IF NEW.api_key_id IS NULL THEN
        INSERT INTO credits_usagebucket AS b
            (account_id, api_key_id, model, hour, requests, credits, prompt_tokens,
             completion_tokens)
        VALUES (NEW.account_id, NULL, NEW.model, bucket_hour, 1, NEW.charged, charged_prompt,
                charged_completion)
        ON CONFLICT (account_id, model, hour) WHERE api_key_id IS NULL DO UPDATE SET
            requests = b.requests + 1,
            credits = b.credits + EXCLUDED.credits,
            prompt_tokens = b.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = b.completion_tokens + EXCLUDED.completion_tokens;
    ELSE
        INSERT INTO credits_usagebucket AS b
            (account_id, api_key_id, model, hour, requests, credits, prompt_tokens,
             completion_tokens)
        VALUES (NEW.account_id, NEW.api_key_id, NEW.model, bucket_hour, 1, NEW.charged,
                charged_prompt, charged_completion)
        ON CONFLICT (account_id, api_key_id, model, hour) WHERE api_key_id IS NOT NULL
        DO UPDATE SET
            requests = b.requests + 1,
            credits = b.credits + EXCLUDED.credits,
            prompt_tokens = b.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = b.completion_tokens + EXCLUDED.completion_tokens;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER credits_usagerecord_bucket
    AFTER INSERT ON credits_usagerecord
    FOR EACH ROW EXECUTE FUNCTION credits_usage_bucket_add();
"""

PG_REVERSE = """
DROP TRIGGER IF EXISTS credits_usagerecord_bucket ON credits_usagerecord;
DROP FUNCTION IF EXISTS credits_usage_bucket_add();
"""

# Django stores an aware datetime on SQLite as UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]', and
# compares such texts as strings: the bucket hour is written in that same form.
_SQLITE_UPSERT = """
CREATE TRIGGER {name} AFTER INSERT ON credits_usagerecord
WHEN NEW.api_key_id IS {when}
BEGIN
    INSERT INTO credits_usagebucket
        (account_id, api_key_id, model, hour, requests, credits, prompt_tokens, completion_tokens)
    VALUES (
        NEW.account_id, NEW.api_key_id, NEW.model, strftime('%Y-%m-%d %H:00:00', NEW.settled_at),
        1, NEW.charged,
        CASE WHEN NEW.charged > 0 THEN NEW.prompt_tokens ELSE 0 END,
        CASE WHEN NEW.charged > 0 THEN NEW.completion_tokens ELSE 0 END
    )
    ON CONFLICT ({target}) WHERE api_key_id IS {when} DO UPDATE SET
        requests = requests + 1,
        credits = credits + excluded.credits,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens;
END
"""

SQLITE_FORWARD = [
    _SQLITE_UPSERT.format(
        name="credits_usagerecord_bucket_keyed",
        when="NOT NULL",
        target="account_id, api_key_id, model, hour",
    ),
    _SQLITE_UPSERT.format(
        name="credits_usagerecord_bucket_keyless", when="NULL", target="account_id, model, hour"
    ),
]

SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS credits_usagerecord_bucket_keyed",
    "DROP TRIGGER IF EXISTS credits_usagerecord_bucket_keyless",
]


def forward_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, None)
    elif vendor == "sqlite":
        for sql in SQLITE_FORWARD:
            schema_editor.execute(sql, None)


def reverse_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_REVERSE, None)
    elif vendor == "sqlite":
        for sql in SQLITE_REVERSE:
            schema_editor.execute(sql, None)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("credits", "0004_payments"),
    ]

    operations = [
        migrations.CreateModel(
            name="UsageBucket",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("model", models.CharField(max_length=64)),
                ("hour", models.DateTimeField(help_text="Start of the UTC hour.")),
                ("requests", models.PositiveIntegerField(default=0, help_text="Settled requests.")),
                ("credits", models.PositiveIntegerField(default=0, help_text="Charged requests.")),
                ("prompt_tokens", models.BigIntegerField(default=0, help_text="Of charged requests.")),
                ("completion_tokens", models.BigIntegerField(default=0, help_text="Of charged requests.")),
                ("account", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="usage_buckets", to="credits.creditaccount")),
                ("api_key", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="accounts.apikey")),
            ],
        ),
        migrations.AddIndex(
            model_name="usagebucket",
            index=models.Index(fields=["account", "hour"], name="usagebucket_account_hour"),
        ),
        migrations.AddConstraint(
            model_name="usagebucket",
            constraint=models.UniqueConstraint(condition=models.Q(("api_key__isnull", False)), fields=("account", "api_key", "model", "hour"), name="usagebucket_one_per_key_model_hour"),
        ),
        migrations.AddConstraint(
            model_name="usagebucket",
            constraint=models.UniqueConstraint(condition=models.Q(("api_key__isnull", True)), fields=("account", "model", "hour"), name="usagebucket_one_per_keyless_model_hour"),
        ),
        migrations.AddConstraint(
            model_name="usagebucket",
            constraint=models.CheckConstraint(condition=models.Q(("credits__lte", models.F("requests"))), name="usagebucket_credits_within_requests"),
        ),
        migrations.AddConstraint(
            model_name="usagebucket",
            constraint=models.CheckConstraint(condition=models.Q(("prompt_tokens__gte", 0), ("completion_tokens__gte", 0)), name="usagebucket_tokens_not_negative"),
        ),
        migrations.RunPython(forward_trigger, reverse_trigger),
    ]
