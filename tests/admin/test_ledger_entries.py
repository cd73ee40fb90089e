"""Ledger entries in the admin: read-only for everyone, filtered and searched, no N+1."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from credits import clock, services
from credits.models import LedgerEntry, LotSource
from tests.factories import registered_user

pytestmark = pytest.mark.django_db

LIST = "/admin/credits/ledgerentry/"


def listed_ids(client: Client, **params: Any) -> set[int]:
    response = client.get(LIST, params)
    assert response.status_code == 200
    return {entry.pk for entry in response.context["cl"].result_list}


def purchase(user: User, amount: int, key: str) -> LedgerEntry:
    return services.credits_grant(
        user_id=user.pk,
        amount=amount,
        source=LotSource.PURCHASE,
        package="standard",
        idempotency_key=key,
        reference=f"purchase:{key}",
    )


def test_superusers_cannot_add_change_or_delete_an_entry(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    entry = LedgerEntry.objects.get(account_id=alice.pk)

    assert root.get(f"{LIST}add/").status_code == 403
    assert root.get(f"{LIST}{entry.pk}/delete/").status_code == 403
    assert root.post(f"{LIST}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    view = root.get(f"{LIST}{entry.pk}/change/")
    assert view.status_code == 200
    assert view.context["has_change_permission"] is False
    assert 'name="_save"' not in view.content.decode()
    assert root.post(f"{LIST}{entry.pk}/change/", {"amount": "1000000"}).status_code == 403
    entry.refresh_from_db()
    assert entry.amount == 100


def test_the_changelist_offers_no_actions_not_even_delete(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    entry = LedgerEntry.objects.get(account_id=alice.pk)
    response = root.get(LIST)
    assert response.context["cl"].model_admin.get_actions(response.wsgi_request) == {}
    assert 'name="action"' not in response.content.decode()
    root.post(LIST, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_entries_filter_by_kind_and_lot_source(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    signup = LedgerEntry.objects.get(account_id=alice.pk)
    bought = purchase(alice, 500, "p1")
    (removed,) = services.credits_adjust(
        user_id=alice.pk, amount=-5, reason="x", idempotency_key="a1"
    )

    assert listed_ids(root, kind="grant") == {signup.pk, bought.pk}
    assert listed_ids(root, kind="adjust") == {removed.pk}
    assert listed_ids(root, lot__source__exact="purchase") == {bought.pk}
    # The removal took from the lot that burns down first (both never expire: the older one).
    assert listed_ids(root, lot__source__exact="signup") == {signup.pk, removed.pk}


def test_entries_filter_by_date(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    clock.advance(timedelta(days=3))
    later = purchase(alice, 500, "later")
    today = clock.now().date()
    assert listed_ids(
        root,
        # The filter's own "Today" link has this shape (aware, in UTC).
        created_at__gte=f"{today} 00:00:00+00:00",
        created_at__lt=f"{today + timedelta(days=1)} 00:00:00+00:00",
    ) == {later.pk}


def test_entries_filter_by_user_email_and_by_account(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    bob = registered_user(email="bob@example.com")
    alices = set(LedgerEntry.objects.filter(account_id=alice.pk).values_list("pk", flat=True))
    bobs = set(LedgerEntry.objects.filter(account_id=bob.pk).values_list("pk", flat=True))

    assert listed_ids(root, user=" Alice@Example.com ") == alices
    assert listed_ids(root, user="bob@example.com", kind="grant") == bobs
    assert listed_ids(root, account=str(bob.pk)) == bobs  # the user page's "all entries" link
    assert listed_ids(root, user="nobody@example.com") == set()
    html = root.get(LIST, {"user": "bob@example.com", "kind": "grant"}).content.decode()
    assert 'name="user" value="bob@example.com"' in html
    assert '<input type="hidden" name="kind" value="grant">' in html  # kept on a new search


def test_entries_are_found_by_exact_reference_or_exact_idempotency_key(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    bought = purchase(alice, 500, "p-42")
    other = purchase(alice, 500, "p-43")
    assert listed_ids(root, q="purchase:p-42") == {bought.pk}
    assert listed_ids(root, q=" purchase:p-43 ") == {other.pk}
    assert listed_ids(root, q="p-43") == {other.pk}  # its idempotency key
    signup = LedgerEntry.objects.get(idempotency_key=f"signup:{alice.pk}")
    assert listed_ids(root, q=f"signup:{alice.pk}") == {signup.pk}
    # Exact only (issue 23): a part of a reference would need a scan of the whole ledger.
    assert listed_ids(root, q="purchase:p-4") == set()
    assert listed_ids(root, q="urchase:p-42") == set()


def test_a_charge_is_found_by_its_request_id_with_or_without_its_prefix(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    services.hold_create(user_id=alice.pk, request_id="req-7f3a")
    services.hold_commit(request_id="req-7f3a")
    services.hold_create(user_id=alice.pk, request_id="req-7f3b")
    services.hold_commit(request_id="req-7f3b")
    charge = LedgerEntry.objects.get(reference="request:req-7f3a")
    assert listed_ids(root, q="req-7f3a") == {charge.pk}
    assert listed_ids(root, q="request:req-7f3a") == {charge.pk}
    assert listed_ids(root, q=charge.idempotency_key) == {charge.pk}
    assert listed_ids(root, q="req-7f3") == set()


def test_the_search_reads_indexes_only(root: Client) -> None:
    """Each branch of the search is an index lookup (EXPLAIN of the list's query): the
    idempotency keys' unique index and the partial index of references that are not charges;
    never a scan of the ledger."""
    if connection.vendor != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    from credits.admin import entry_search

    alice = registered_user(email="alice@example.com")
    purchase(alice, 500, "p-42")
    query = LedgerEntry.objects.filter(entry_search("purchase:p-42")).values("pk")
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table: ask for the best index
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "entry_unique_idempotency_key" in plan
    assert "entry_reference_not_charge" in plan
    assert "Seq Scan on credits_ledgerentry" not in plan


def test_the_changelist_does_not_query_once_per_row(root: Client) -> None:
    def queries_for_listing() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert root.get(LIST).status_code == 200
        return len(captured)

    registered_user(email="first@example.com")
    few = queries_for_listing()
    for n in range(30):
        user = registered_user(email=f"u{n}@example.com")
        services.credits_adjust(
            user_id=user.pk, amount=5, reason="bulk", idempotency_key=f"n{n}", created_by=user
        )
    assert LedgerEntry.objects.count() == 61
    assert queries_for_listing() == few


def test_staff_need_the_view_permission_to_see_entries(staff: Callable[..., Client]) -> None:
    registered_user(email="alice@example.com")
    assert staff("accounts.view_user").get(LIST).status_code == 403
    assert staff("credits.view_ledgerentry").get(LIST).status_code == 200
