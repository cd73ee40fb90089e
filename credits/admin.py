"""Admin registrations of the credits app, one module per concern.

- the panels of the user page (registered with `accounts.admin.user_panel_register`, because
  accounts may not import credits): "At a glance" (account, freeze, verification, keys and
  logins, then the live logins), and "Credits" (balance, reserved and available credits, live
  lots, recent ledger entries), with the "Adjust credits" form for staff holding
  `credits.adjust_credits` and the "Freeze account" / "Unfreeze account" form for staff holding
  `credits.freeze_accounts`;
- ledger entries: read-only for everyone, superusers included (the table is append-only);
- the credit settings;
- the index page's figures of the day (`templates/admin/credits/index.html`).

Tiers are in `credits/gateway/admin.py`; packages, purchases and Stripe events in
`credits/payments/admin.py`.

Every credit movement made here goes through `credits.services`; nothing writes ledger rows.
"""

from datetime import UTC
from typing import Any
from uuid import UUID

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from accounts.admin import UserPanel, user_panel_register
from accounts.login_sessions import login_sessions_live
from accounts.models import ApiKey, User, normalize_email
from config.admin_lists import AFTER, BEFORE, KeysetListAdmin
from config.audit import audit_record
from config.text import storable

from . import services
from .admin_forms import AdjustCreditsForm, FreezeForm
from .errors import IdempotencyConflict, InsufficientCredits, LedgerLimitExceeded
from .models import CreditAccount, CreditSettings, EntryKind, Hold, LedgerEntry

ADJUST_PERMISSION = "credits.adjust_credits"
FREEZE_PERMISSION = "credits.freeze_accounts"
RECENT_ENTRIES = 20

# The index page shows today's credits sold, consumed and expired (credits.usage.dashboard).
admin.site.index_template = "admin/credits/index.html"
admin.site.site_header = "Kimi billing administration"
admin.site.site_title = "Kimi billing admin"
# The app list in a sidebar repeats the index and takes 300 px from every list: without it, the
# ledger's and purchases' columns fit a 1,400-px screen unclipped (tests/admin/test_browser.py).
admin.site.enable_nav_sidebar = False


def _when(moment: Any) -> str:
    """A moment as every admin page shows one (config/formats: `2026-11-25 07:00:00 UTC`)."""
    if moment is None:
        return "never"
    return date_format(timezone.localtime(moment, UTC), "DATETIME_FORMAT")


def _n(number: int) -> str:
    return f"{number:,}"


def _bad(text: str) -> SafeString:
    return format_html('<span class="glance-bad">{}</span>', text)


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]], empty: str) -> SafeString:
    if not rows:
        return format_html("<p>{}</p>", empty)
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    return format_html(
        '<table class="credits-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        head,
        body,
    )


# --- the credits panel of the user page (accounts.admin.user_panel_register) ----------------


def _account(obj: User) -> CreditAccount | None:
    # Django caches the related row on `obj`, so the panel's fields read it once. None: a user
    # without an account (staff created with createsuperuser, say).
    account: CreditAccount | None = getattr(obj, "credit_account", None)
    return account


# --- the glance panel: what support asks first -----------------------------------------------


@admin.display(description="status")
def at_a_glance(obj: User) -> SafeString:
    """Can this user log in and call the API, is the account frozen, is the address verified."""
    account = _account(obj)
    if account is not None and account.frozen_at is not None:
        frozen = format_html(
            "{} since {}: {}", _bad("frozen"), _when(account.frozen_at), account.frozen_reason
        )
    else:
        frozen = SafeString("not frozen" if account is not None else "no credit account")
    if obj.deleted_at is not None:
        status = format_html("{} {}", _bad("deleted"), _when(obj.deleted_at))
    else:
        status = SafeString("active") if obj.is_active else _bad("deactivated")
    # The moment of the address's verification (issue 16: `email_verified_at`).
    verification: Any = (
        f"verified {_when(obj.email_verified_at)}"
        if obj.email_verified_at is not None
        else _bad("not verified")
    )
    keys = ApiKey.objects.filter(user=obj).live()
    key_count = keys.count()
    last_key_use = keys.exclude(last_used_at=None).order_by("-last_used_at").first()
    sessions = login_sessions_live(user=obj)
    rows = (
        ("Account", status),
        ("Frozen", frozen),
        ("Email", format_html("{} ({})", obj.email, verification)),
        (
            "API keys",
            format_html(
                "{} live, last used {}",
                _n(key_count),
                _when(last_key_use.last_used_at) if last_key_use else "never",
            ),
        ),
        ("Logins", format_html("{} live", _n(sessions.count()))),
    )
    return format_html(
        '<table class="credits-table" id="at-a-glance"><tbody>{}</tbody></table>',
        format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
    )


@admin.display(description="live logins")
def login_sessions(obj: User) -> SafeString:
    rows = [
        (
            _when(session.created_at),
            _when(session.last_used_at),
            _when(session.expires_at),
            " + ".join(
                kind
                for kind, present in (
                    ("token", session.auth_token_id is not None),
                    ("browser cookie", bool(session.session_key)),
                )
                if present
            ),
            Truncator(session.user_agent).chars(60) or "\u2013",
        )
        for session in login_sessions_live(user=obj)[:RECENT_ENTRIES]
    ]
    return format_html(
        '<div id="login-sessions">{}</div>',
        _table(("logged in", "last used", "expires", "with", "client"), rows, "No live logins"),
    )


# --- the credits panel -----------------------------------------------------------------------


@admin.display(description="balance", ordering="credit_account__balance")
def balance(obj: User) -> int | None:
    # The cached balance (exact until the account's next expiry is swept); the user page shows
    # the exact figures.
    account = _account(obj)
    return account.balance if account is not None else None


@admin.display(description="balance")
def credits_summary(obj: User) -> SafeString:
    account = _account(obj)
    if account is None:
        return format_html("<p>{}</p>", "No credit account.")
    figures = services.account_balance(account=account)
    frozen = (
        format_html(
            '<p class="errornote">Frozen since {}: {}</p>',
            _when(account.frozen_at),
            account.frozen_reason,
        )
        if account.frozen_at
        else ""
    )
    return format_html(
        "{}"
        '<table class="credits-table credits-summary"><tbody>'
        '<tr><th>Balance</th><td id="credits-balance">{}</td></tr>'
        '<tr><th>Reserved</th><td id="credits-reserved">{}</td></tr>'
        '<tr><th>Available</th><td id="credits-available">{}</td></tr>'
        '<tr><th>Consumed (all time)</th><td id="credits-consumed">{}</td></tr>'
        "</tbody></table>",
        frozen,
        _n(figures.balance),
        _n(figures.reserved),
        _n(figures.available),
        _n(account.consumed),
    )


@admin.display(description="live lots")
def live_lots(obj: User) -> SafeString:
    account = _account(obj)
    if account is None:
        return SafeString("")
    rows = [
        (
            lot.source,
            lot.package or "\u2013",
            _n(lot.granted),
            _n(lot.remaining),
            _n(lot.reserved),
            _when(lot.expires_at),
            _when(lot.created_at),
        )
        for lot in services.lots_spendable(account=account)
    ]
    return _table(
        ("source", "package", "granted", "remaining", "reserved", "expires", "granted at"),
        rows,
        "No credit left.",
    )


@admin.display(description="recent ledger entries")
def recent_entries(obj: User) -> SafeString:
    account = _account(obj)
    if account is None:
        return SafeString("")
    # The ids from the index alone, then the rows (services.entry_ids_newest: a quiet heavy
    # account's newest entries were a walk of everyone's newer ones).
    ids = services.entry_ids_newest(account_id=account.pk, limit=RECENT_ENTRIES)
    entries = (
        LedgerEntry.objects.filter(id__in=ids).select_related("lot", "created_by").order_by("-id")
    )
    rows = [
        (
            _when(entry.created_at),
            entry.kind,
            f"{entry.amount:+,d}",
            _n(entry.balance_after),
            entry.lot.source,
            entry.reference,
            entry.reason,
            entry.created_by.email if entry.created_by else "",
        )
        for entry in entries
    ]
    link = format_html(
        '<p><a href="{}?account={}">All entries of this user</a></p>',
        reverse("admin:credits_ledgerentry_changelist"),
        obj.pk,
    )
    table = _table(
        ("at", "kind", "amount", "balance after", "source", "reference", "reason", "by"),
        rows,
        "No entries yet.",
    )
    return format_html('<div id="recent-entries">{}</div>{}', table, link)


# --- the staff forms (adjust, freeze): their own views, their own permissions ----------------

ADJUST_URL_NAME = "accounts_user_adjust_credits"
FREEZE_URL_NAME = "accounts_user_freeze"


def _staff_urls(model_admin: "admin.ModelAdmin[User]") -> list[URLPattern]:
    def adjust(request: HttpRequest, user_id: UUID) -> HttpResponse:
        return adjust_credits_view(model_admin, request, user_id)

    def freeze(request: HttpRequest, user_id: UUID) -> HttpResponse:
        return freeze_view(model_admin, request, user_id)

    return [
        path(
            "<uuid:user_id>/adjust-credits/",
            model_admin.admin_site.admin_view(adjust),
            name=ADJUST_URL_NAME,
        ),
        path(
            "<uuid:user_id>/freeze/",
            model_admin.admin_site.admin_view(freeze),
            name=FREEZE_URL_NAME,
        ),
    ]


def _staff_tools(request: HttpRequest, object_id: str) -> list[tuple[str, str, str]]:
    try:
        user_id = UUID(object_id)
    except ValueError:
        return []  # the admin itself answers that no such user exists
    may_adjust = request.user.has_perm(ADJUST_PERMISSION)
    may_freeze = request.user.has_perm(FREEZE_PERMISSION)
    if not (may_adjust or may_freeze):
        return []
    # None: no such user, or a user from before every user had an account.
    account = CreditAccount.objects.filter(pk=user_id).first()
    if account is None:
        return []
    tools = []
    if may_adjust:
        url = reverse(f"admin:{ADJUST_URL_NAME}", args=[user_id])
        tools.append(("adjust-credits-link", "Adjust credits", url))
    if may_freeze:
        label = "Unfreeze account" if account.frozen_at is not None else "Freeze account"
        tools.append(("freeze-link", label, reverse(f"admin:{FREEZE_URL_NAME}", args=[user_id])))
    return tools


def _done(
    model_admin: "admin.ModelAdmin[User]",
    request: HttpRequest,
    user: User,
    *,
    history: str,
    message: str,
) -> HttpResponse:
    """After a staff form's write: the user's history (who, when, what), a message, and back to
    the user's page."""
    model_admin.log_change(request, user, history)
    model_admin.message_user(request, message, messages.SUCCESS)
    return HttpResponseRedirect(reverse("admin:accounts_user_change", args=[user.pk]))


def _form_page(
    model_admin: "admin.ModelAdmin[User]",
    request: HttpRequest,
    user: User,
    form: Any,
    *,
    title: str,
    submit: tuple[str, str],
    intro: str = "",
    **extra: Any,
) -> HttpResponse:
    """One of the user's staff forms (adjust, freeze) on the admin's layout."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "opts": model_admin.opts,
        "original": user,
        "form": form,
        "media": model_admin.media + form.media,
        "intro": intro,
        "submit_name": submit[0],
        "submit_label": submit[1],
        "change_url": reverse("admin:accounts_user_change", args=[user.pk]),
        **extra,
    }
    return TemplateResponse(request, "admin/credits/user/staff_form.html", context)


def adjust_credits_view(
    model_admin: "admin.ModelAdmin[User]", request: HttpRequest, user_id: UUID
) -> HttpResponse:
    if not request.user.has_perm(ADJUST_PERMISSION):
        raise PermissionDenied
    user = get_object_or_404(User, pk=user_id)
    account = get_object_or_404(CreditAccount, pk=user.pk)
    form = AdjustCreditsForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        amount: int = form.cleaned_data["amount"]
        before = services.account_balance(account=account).balance
        try:
            entries = services.credits_adjust(
                user_id=user.pk,
                amount=amount,
                reason=form.cleaned_data["reason"],
                idempotency_key=form.idempotency_key,
                created_by=request.user,  # type: ignore[arg-type]
                expires_at=form.cleaned_data["expires_at"],
            )
        except (InsufficientCredits, LedgerLimitExceeded) as exc:
            form.add_error("amount", exc.message)
        except IdempotencyConflict:
            form.add_error(
                None,
                "This form was already used for a different adjustment. "
                "Nothing was written: open the form again for a new one.",
            )
        else:
            audit_record(
                instance=account,
                action="update",
                before={"balance": before},
                after={
                    "balance": entries[-1].balance_after if entries else before,
                    "adjustment": amount,
                    "reason": form.cleaned_data["reason"],
                    "entries": ",".join(str(e.pk) for e in entries),
                },
            )
            return _done(
                model_admin,
                request,
                user,
                history=f"Adjusted credits by {amount:+d}: {form.cleaned_data['reason']}",
                message=f"Adjusted the credits of {user.email} by {amount:+d}.",
            )
    return _form_page(
        model_admin,
        request,
        user,
        form,
        title=f"Adjust the credits of {user.email}",
        submit=("_adjust", "Adjust credits"),
        balance=services.account_balance(account=account),
    )


def freeze_view(
    model_admin: "admin.ModelAdmin[User]", request: HttpRequest, user_id: UUID
) -> HttpResponse:
    """Freeze an account (the gateway refuses its keys, purchases are refused) or unfreeze a
    frozen one; either way with a reason, kept in the user's history with who and when (and,
    for a freeze, on the account, shown on the page and to support)."""
    if not request.user.has_perm(FREEZE_PERMISSION):
        raise PermissionDenied
    user = get_object_or_404(User, pk=user_id)
    account = get_object_or_404(CreditAccount, pk=user.pk)
    unfreeze = account.frozen_at is not None
    form = FreezeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        reason: str = form.cleaned_data["reason"]
        before = {"frozen_at": account.frozen_at, "frozen_reason": account.frozen_reason}
        if unfreeze:
            services.account_unfreeze(user_id=user.pk)
            message = f"Unfroze the account: {reason}"
        else:
            services.account_freeze(user_id=user.pk, reason=reason)
            message = f"Froze the account: {reason}"
        account.refresh_from_db()
        audit_record(  # the staff write, append-only, with who (the request's user)
            instance=account,
            action="update",
            before=before,
            after={
                "frozen_at": account.frozen_at,
                "frozen_reason": account.frozen_reason,
                "reason": reason,
            },
        )
        return _done(
            model_admin, request, user, history=message, message=f"{user.email}: {message}"
        )
    return _form_page(
        model_admin,
        request,
        user,
        form,
        title=f"{'Unfreeze' if unfreeze else 'Freeze'} the account of {user.email}",
        intro=(
            f"Frozen since {_when(account.frozen_at)}: {account.frozen_reason}"
            if unfreeze
            else "A frozen account's keys are refused by the gateway (403 account_frozen) "
            "and it cannot buy credits; its balance is kept."
        ),
        submit=("_unfreeze", "Unfreeze") if unfreeze else ("_freeze", "Freeze"),
    )


# What support asks first (can this user log in and call the API, and is the account frozen),
# above who the user is; then the money right after who the user is: it is what staff open the
# page for. Read-only here; credits change only through the adjust form.
user_panel_register(
    UserPanel(
        name="glance",
        title="At a glance",
        fields=(at_a_glance, login_sessions),
        first=True,
    )
)
user_panel_register(
    UserPanel(
        name="credits",
        title="Credits",
        fields=(credits_summary, live_lots, recent_entries),
        list_display=(balance,),
        list_select_related=("credit_account",),
        urls=_staff_urls,
        object_tools=_staff_tools,
    )
)


# --- the ledger ------------------------------------------------------------------------------


class UserEmailFilter(admin.SimpleListFilter):
    """Filter by the user's exact email (a list of every user would not fit in the sidebar).

    The address is turned into the account's id first (one lookup of the unique email), so the
    list's query is `account_id = ... ORDER BY id DESC LIMIT`, which `entry_account_newest`
    serves for the quietest account as for the busiest; a join on the user's email left the
    planner free to walk everyone's newer entries (10 s at 5 million entries, issue 23)."""

    title = "user"
    parameter_name = "user"
    template = "admin/credits/email_filter.html"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def choices(self, changelist: Any) -> Any:
        keep = [
            (name, value)
            for name, value in changelist.params.items()
            if name not in (self.parameter_name, "p", BEFORE, AFTER)
        ]
        yield {"value": self.value() or "", "keep": keep}

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        if not storable(value):  # no address holds a NUL, and PostgreSQL refuses it in a query
            return queryset.none()
        user_id = User.objects.filter(email=normalize_email(value)).values_list("pk").first()
        if user_id is None:
            return queryset.none()
        return queryset.filter(account_id=user_id[0])


REQUEST_REFERENCE = "request:"


def entry_search(term: str) -> Q:
    """The entries a staff search names exactly: by idempotency key, by reference, or by the
    gateway's request id (with or without `request:`). Every branch is an index lookup, never
    a scan (issue 23: a substring search read the whole ledger, 8.8 s at 5 million entries):

    - the idempotency key: `entry_unique_idempotency_key`;
    - a reference of anything but a charge (purchases, referrals, adjustments, signups):
      `entry_reference_not_charge`, a partial index that charges never write to;
    - a charge's reference is `request:` + the request id, and its idempotency key `charge:` +
      its hold's id: the hold is found by its unique request id (`hold_unique_request_id`), so
      charges are found without an index entry of their own per pair."""
    request_ids = {term, term.removeprefix(REQUEST_REFERENCE)}
    hold_ids = Hold.objects.filter(request_id__in=request_ids).values_list("pk", flat=True)
    keys = {term, *(f"charge:{hold_id}" for hold_id in hold_ids)}
    return Q(idempotency_key__in=keys) | (Q(reference=term) & ~Q(kind=EntryKind.CHARGE))


@admin.register(LedgerEntry)
class LedgerEntryAdmin(KeysetListAdmin):
    """Append-only, so read-only for everyone: a mistake is corrected by a new adjustment.

    The list stays as fast at 10 million entries as at a thousand (config/admin_lists.py, and
    the README's "Data growth"): no count, newest first by id (or oldest first: the time
    column's sort), *Older* / *Newer* by keyset, a user filter on `entry_account_newest`, and
    an exact search (`entry_search`)."""

    list_display = (
        "created",
        "user_email",
        "kind",
        "signed_amount",
        "balance_after",
        "lot_source",
        "reference",
        "short_reason",
        "created_by",
    )
    # The one sort an index serves whatever the filters: by id, which grows with time.
    sortable_by = ("created",)
    list_filter = ("kind", "lot__source", "created_at", UserEmailFilter)
    list_select_related = ("account__user", "lot", "created_by")
    # Only shows the search box: get_search_results searches exact values (entry_search).
    search_fields = ("=reference", "=idempotency_key")
    search_help_text = "Search by an exact reference (purchase:…), request id or idempotency key."
    ordering = ("-id",)
    actions = None
    fields = (
        "id",
        "account",
        "lot",
        "kind",
        "amount",
        "balance_after",
        "idempotency_key",
        "reference",
        "reason",
        "created_by",
        "created_at",
    )
    readonly_fields = fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        if not storable(term):
            return queryset.none(), False
        return queryset.filter(entry_search(term)), False

    @admin.display(description="created at", ordering="id")
    def created(self, obj: LedgerEntry) -> Any:
        return obj.created_at

    @admin.display(description="user")
    def user_email(self, obj: LedgerEntry) -> str:
        return obj.account.user.email

    @admin.display(description="amount")
    def signed_amount(self, obj: LedgerEntry) -> str:
        return f"{obj.amount:+,d}"

    @admin.display(description="reason")
    def short_reason(self, obj: LedgerEntry) -> str:
        return Truncator(obj.reason).chars(60)

    @admin.display(description="lot source")
    def lot_source(self, obj: LedgerEntry) -> str:
        return obj.lot.source

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False


# --- data staff edit -------------------------------------------------------------------------


@admin.register(CreditSettings)
class CreditSettingsAdmin(admin.ModelAdmin):
    list_display = ("__str__", "signup_credits")
    fields = ("signup_credits",)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # One row (seeded by migration 0002): go straight to it.
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        settings_row = CreditSettings.load()
        return HttpResponseRedirect(
            reverse("admin:credits_creditsettings_change", args=[settings_row.pk])
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: CreditSettings | None = None
    ) -> bool:
        return False
