"""The audit log of staff writes (django-auditlog's `auditlog_logentry`) is append-only in the
database, like the ledger: row triggers refuse UPDATE and DELETE, a statement trigger refuses
TRUNCATE unless the session set `billing.allow_ledger_truncate = on` (only the test settings
do, for Django's test flush). A consequence: a user named as an actor cannot be deleted (the
FK's SET NULL is an UPDATE): accounts are anonymised, never deleted (README).
"""

from django.db import migrations

PG_FORWARD = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE'
       AND coalesce(current_setting('billing.allow_ledger_truncate', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'auditlog_logentry is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER auditlog_logentry_no_update_delete
    BEFORE UPDATE OR DELETE ON auditlog_logentry
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER auditlog_logentry_no_truncate
    BEFORE TRUNCATE ON auditlog_logentry
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"""

PG_REVERSE = """
DROP TRIGGER IF EXISTS auditlog_logentry_no_truncate ON auditlog_logentry;
DROP TRIGGER IF EXISTS auditlog_logentry_no_update_delete ON auditlog_logentry;
DROP FUNCTION IF EXISTS audit_log_append_only();
"""

SQLITE_FORWARD = [
    """CREATE TRIGGER auditlog_logentry_no_update BEFORE UPDATE ON auditlog_logentry
       BEGIN SELECT RAISE(ABORT, 'auditlog_logentry is append-only: UPDATE is not allowed'); END""",
    """CREATE TRIGGER auditlog_logentry_no_delete BEFORE DELETE ON auditlog_logentry
       BEGIN SELECT RAISE(ABORT, 'auditlog_logentry is append-only: DELETE is not allowed'); END""",
]

SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS auditlog_logentry_no_update",
    "DROP TRIGGER IF EXISTS auditlog_logentry_no_delete",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"postgresql": [PG_FORWARD], "sqlite": SQLITE_FORWARD}.get(vendor, [])
    for sql in statements:
        schema_editor.execute(sql, None)


def reverse(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"postgresql": [PG_REVERSE], "sqlite": SQLITE_REVERSE}.get(vendor, [])
    for sql in statements:
        schema_editor.execute(sql, None)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_existing_users_verified"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [migrations.RunPython(forward, reverse)]
