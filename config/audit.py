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

from collections.abc import Callable
from typing import Any

from auditlog.context import set_actor
from auditlog.models import LogEntry
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse


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


class AdminAuditActorMiddleware:
    """Names the request's user as the actor of the audit rows written while serving an admin
    page. Unlike auditlog's own middleware it leaves `request.user` lazy (auditlog resolves it
    only when a row is written) and stays out of every other path: the API's session lookup
    happens inside DRF, which answers a lost database with its 503, and API requests pay
    nothing for an audit they never write."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.prefix: str | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.prefix is None:
            try:
                self.prefix = reverse("admin:index")
            except NoReverseMatch:
                self.prefix = ""  # a URLconf without the admin: nothing here is audited
        if not self.prefix or not request.path.startswith(self.prefix):
            return self.get_response(request)
        with set_actor(request.user, remote_addr=request.META.get("REMOTE_ADDR")):
            return self.get_response(request)
