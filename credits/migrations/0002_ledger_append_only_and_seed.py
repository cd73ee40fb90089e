"""The ledger is append-only in the database itself, and the documented tiers are seeded.

PostgreSQL: row triggers refuse UPDATE and DELETE, a statement trigger refuses TRUNCATE unless
the session has set `billing.allow_ledger_truncate = on` (only the test settings do, so Django's
test flush can reset the database between transactional tests). SQLite has no TRUNCATE; its
triggers refuse UPDATE and DELETE.
"""

from django.db import migrations

PG_FORWARD = """
CREATE FUNCTION credits_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE'
       AND coalesce(current_setting('billing.allow_ledger_truncate', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'credits_ledgerentry is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER credits_ledgerentry_no_update_delete
    BEFORE UPDATE OR DELETE ON credits_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION credits_ledger_append_only();
CREATE TRIGGER credits_ledgerentry_no_truncate
    BEFORE TRUNCATE ON credits_ledgerentry
    FOR EACH STATEMENT EXECUTE FUNCTION credits_ledger_append_only();
"""

PG_REVERSE = """
DROP TRIGGER IF EXISTS credits_ledgerentry_no_truncate ON credits_ledgerentry;
DROP TRIGGER IF EXISTS credits_ledgerentry_no_update_delete ON credits_ledgerentry;
DROP FUNCTION IF EXISTS credits_ledger_append_only();
"""

SQLITE_FORWARD = [
    """CREATE TRIGGER credits_ledgerentry_no_update BEFORE UPDATE ON credits_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'credits_ledgerentry is append-only: UPDATE is not allowed'); END""",
    """CREATE TRIGGER credits_ledgerentry_no_delete BEFORE DELETE ON credits_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'credits_ledgerentry is append-only: DELETE is not allowed'); END""",
]

SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS credits_ledgerentry_no_update",
    "DROP TRIGGER IF EXISTS credits_ledgerentry_no_delete",
]

TIERS = [
    # name, min balance, max balance, per minute, per hour, per day (the public documentation)
    ("1-100", 1, 100, 20, 600, 5000),
    ("101-1,000", 101, 1000, 60, 2000, 20000),
    ("1,001-10,000", 1001, 10000, 200, 6000, 50000),
    ("10,000+", 10001, None, 500, 15000, 100000),
]


def _run(schema_editor, statements):
    for sql in statements:
        schema_editor.execute(sql, None)


def forward_guard(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        _run(schema_editor, [PG_FORWARD])
    elif vendor == "sqlite":
        _run(schema_editor, SQLITE_FORWARD)


def reverse_guard(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        _run(schema_editor, [PG_REVERSE])
    elif vendor == "sqlite":
        _run(schema_editor, SQLITE_REVERSE)


def seed(apps, schema_editor):
    Tier = apps.get_model("credits", "Tier")
    for name, low, high, per_minute, per_hour, per_day in TIERS:
        Tier.objects.get_or_create(
            name=name,
            defaults={
                "min_balance": low,
                "max_balance": high,
                "requests_per_minute": per_minute,
                "requests_per_hour": per_hour,
                "requests_per_day": per_day,
            },
        )
    apps.get_model("credits", "CreditSettings").objects.get_or_create(pk=1, defaults={"signup_credits": 100})


def unseed(apps, schema_editor):
    apps.get_model("credits", "Tier").objects.filter(name__in=[t[0] for t in TIERS]).delete()


class Migration(migrations.Migration):
    dependencies = [("credits", "0001_initial")]

    operations = [
        migrations.RunPython(forward_guard, reverse_guard),
        migrations.RunPython(seed, unseed),
    ]
