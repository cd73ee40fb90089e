"""No user can read or change another user's keys, ledger, purchases, referrals or usage:
every endpoint is tried by Mallory with Alice's ids, and Alice's data must be unchanged and
invisible (another user's object is a 404, never a 403 that would confirm it exists)."""

import base64
import json

import pytest
from django.test import Client

from accounts.models import ApiKey
from credits.models import LedgerEntry
from credits.payments.models import Purchase
from tests.mail_support import outbox_token
from tests.stripe_support import StripeRecordedServer

from .conftest import Person, make_person

pytestmark = pytest.mark.django_db


def _cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": entry_id}).encode()).decode().rstrip("=")


def test_revoking_another_users_key_is_a_404_and_the_key_keeps_working(
    alice: Person, mallory: Person
) -> None:
    response = mallory.client().delete(f"/api/user/keys/{alice.key.pk}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "key_not_found"
    alice.key.refresh_from_db()
    assert ApiKey.objects.filter(pk=alice.key.pk).live().exists()


def test_the_key_list_shows_only_ones_own_keys(alice: Person, mallory: Person) -> None:
    listed = mallory.client().get("/api/user/keys").json()
    ids = {key["id"] for key in listed}
    assert str(mallory.key.pk) in ids
    assert str(alice.key.pk) not in ids


def test_usage_filtered_by_another_users_key_id_is_a_404(alice: Person, mallory: Person) -> None:
    response = mallory.client().get(f"/api/user/credits?key={alice.key.pk}")
    assert response.status_code == 404
    assert "usage_by_day" not in response.content.decode()


def test_another_users_api_key_shows_that_user_only_their_own_credits(
    alice: Person, mallory: Person
) -> None:
    # Mallory's session with Alice's key in X-API-Key: the key decides whose account it is,
    # and it is Alice's own key; a key of Mallory's never shows Alice's credits.
    answer = Client(HTTP_X_API_KEY=mallory.raw_key).get("/api/user/credits")
    assert answer.status_code == 200
    assert answer.json()["credits_remaining"] == 100


def test_the_ledger_never_shows_another_users_entries_whatever_the_cursor(
    alice: Person, mallory: Person
) -> None:
    alices = set(LedgerEntry.objects.filter(account__user=alice.user).values_list("pk", flat=True))
    assert alices
    mallorys = set(
        LedgerEntry.objects.filter(account__user=mallory.user).values_list("pk", flat=True)
    )
    beyond = max(LedgerEntry.objects.values_list("pk", flat=True)) + 1
    for query in ("", f"?cursor={_cursor(beyond)}"):
        page = mallory.client().get(f"/api/user/ledger{query}")
        assert page.status_code == 200
        assert {entry["id"] for entry in page.json()["results"]} == mallorys
    # A cursor just above Alice's entries: only Mallory's older entries (none) qualify.
    page = mallory.client().get(f"/api/user/ledger?cursor={_cursor(max(alices) + 1)}")
    assert page.status_code == 200
    assert not {entry["id"] for entry in page.json()["results"]} & alices


def test_purchases_are_listed_only_to_their_buyer_and_an_idempotency_key_is_per_user(
    alice: Person, mallory: Person, stripe: StripeRecordedServer
) -> None:
    bought = alice.client().post(
        "/api/purchases",
        {"package": "starter"},
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="order-1",
    )
    assert bought.status_code == 201
    purchase_id = bought.json()["purchase_id"]
    assert mallory.client().get("/api/purchases").json() == []
    # The same Idempotency-Key from another user is another purchase, never Alice's.
    replay = mallory.client().post(
        "/api/purchases",
        {"package": "starter"},
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="order-1",
    )
    assert replay.status_code == 201
    assert replay.json()["purchase_id"] != purchase_id
    assert replay.json()["checkout_url"] != bought.json()["checkout_url"]
    assert Purchase.objects.get(pk=purchase_id).user_id == alice.user.pk
    listed = {p["id"] for p in alice.client().get("/api/purchases").json()}
    assert listed == {purchase_id}


def test_referral_summaries_count_only_ones_own_invitees(alice: Person, mallory: Person) -> None:
    invited = Client().post(
        "/api/auth/register",
        {
            "email": "friend@example.com",
            "password": "a long enough pw 123",
            "invite_code": (alice.user.invite_code),
        },
        content_type="application/json",
    )
    assert invited.status_code == 201
    token = outbox_token("friend@example.com", "accounts/email/verify_email")
    assert (
        Client()
        .post("/api/auth/verify-email", {"token": token}, content_type="application/json")
        .status_code
        == 200
    )  # invitees count once verified
    alices = alice.client().get("/api/user/referrals").json()
    mallorys = mallory.client().get("/api/user/referrals").json()
    assert alices["registered"] == 1
    assert mallorys["registered"] == 0
    assert mallorys["credits_earned"] == 0
    assert mallorys["invite_code"] != alices["invite_code"]


def test_logging_out_ends_only_ones_own_token(alice: Person, mallory: Person) -> None:
    assert mallory.client().post("/api/auth/logout").status_code == 204
    assert alice.client().get("/api/user/keys").status_code == 200
    assert mallory.client().get("/api/user/keys").status_code == 401


def test_a_revoked_key_of_one_user_leaves_the_other_users_keys_alone(
    alice: Person, mallory: Person
) -> None:
    assert mallory.client().delete(f"/api/user/keys/{mallory.key.pk}").status_code == 204
    third = make_person("carol@example.com")
    assert Client(HTTP_X_API_KEY=alice.raw_key).get("/api/user/credits").status_code == 200
    assert Client(HTTP_X_API_KEY=third.raw_key).get("/api/user/credits").status_code == 200
    assert Client(HTTP_X_API_KEY=mallory.raw_key).get("/api/user/credits").status_code == 401
