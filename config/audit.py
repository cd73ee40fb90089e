"""The audit log of staff writes: django-auditlog's `LogEntry`, append-only in the database
(accounts/migrations/0006_audit_log_append_only.py), read in the admin (*Auditlog > Log
entries*), written by nobody there.

Two ways in. Models staff edit in the admin (users, tiers, packages, referral programs, staff
refunds) are registered with auditlog by their app's admin module: every save records who (the
request's user, set by `AuditlogMiddleware`), when, and each changed field as [before, after].
Writes the admin makes through a service or a queryset `.update()` (adjustments, key and token
revocations, unfreezes), which no model signal sees, call `audit_record` with the values before
and after. The ledger's own tables are not registered: their saves are constant and already
append-only; the staff adjustment is recorded here by `audit_record`.
"""

from typing import Any

from auditlog.models import LogEntry
from django.db.models import Model


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def audit_record(
    *, instance: Model, action: str, before: dict[str, Any], after: dict[str, Any]
) -> LogEntry:
    """One audit row for a staff write on `instance` (`action`: "create", "update" or
    "delete"), with each field's [before, after] as text (the actor comes from the request)."""
    changes = {f: [_text(before.get(f)), _text(after.get(f))] for f in {*before, *after}}
    code = {
        "create": LogEntry.Action.CREATE,
        "update": LogEntry.Action.UPDATE,
        "delete": LogEntry.Action.DELETE,
    }[action]
    entry = LogEntry.objects.log_create(instance, force_log=True, action=code, changes=changes)
    assert entry is not None
    return entry
