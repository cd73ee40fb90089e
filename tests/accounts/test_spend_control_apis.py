"""The user API of spend controls and rotation (issue 18): PATCH a key, rotate it, set the
account's monthly limit; bad input is a 400 naming the field and changes nothing."""

import pytest

from accounts.api_keys import api_key_resolve
from credits import services
from credits.models import CreditAccount
from tests.accounts.test_apis import _token_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_budget_models_rotation_and_limits_through_the_api() -> None:
    user = UserFactory.create()
    services.account_open(user_id=user.pk)
    client = _token_client(user)
    created = client.post(
        "/api/user/keys",
        {"name": "ci", "budget": {"credits": 37, "period": "day"}, "allowed_models": ["m1"]},
        format="json",
    ).json()
    key_id = created["id"]
    [listed] = client.get("/api/user/keys").json()
    assert listed["budget"] == {"credits": 37, "period": "day"}
    assert listed["allowed_models"] == ["m1"] and listed["spent"] == 0
    assert listed["period_resets_at"].endswith("T00:00:00Z")

    patched = client.patch(
        f"/api/user/keys/{key_id}", {"budget": None, "name": "ci-2"}, format="json"
    )
    assert patched.status_code == 200
    assert (patched.json()["budget"], patched.json()["name"]) == (None, "ci-2")
    assert patched.json()["allowed_models"] == ["m1"]  # absent: unchanged

    bad = client.patch(
        f"/api/user/keys/{key_id}", {"budget": {"credits": -1, "period": "day"}}, format="json"
    )
    assert bad.status_code == 400 and "budget" in bad.content.decode()
    bad = client.post(f"/api/user/keys/{key_id}/rotate", {"grace_seconds": 604801}, format="json")
    assert bad.status_code == 400 and "grace_seconds" in bad.content.decode()

    rotated = client.post(f"/api/user/keys/{key_id}/rotate", {}, format="json")
    assert rotated.status_code == 201
    body = rotated.json()
    assert set(body) == {"id", "name", "prefix", "key", "previous_expires_at"}
    assert body["id"] == key_id and body["key"] != created["key"]
    assert api_key_resolve(created["key"]) is not None  # in its grace period (1 day)
    assert api_key_resolve(body["key"]) is not None

    other = _token_client(UserFactory.create())
    assert other.patch(f"/api/user/keys/{key_id}", {}, format="json").status_code == 404
    assert other.post(f"/api/user/keys/{key_id}/rotate", {}, format="json").status_code == 404

    assert client.get("/api/user/limits").json() == {"monthly_credit_limit": None}
    assert client.put("/api/user/limits", {"monthly_credit_limit": 500}, format="json").json() == {
        "monthly_credit_limit": 500
    }
    bad = client.put("/api/user/limits", {"monthly_credit_limit": "x"}, format="json")
    assert bad.status_code == 400 and "monthly_credit_limit" in bad.content.decode()
    assert CreditAccount.objects.get(pk=user.pk).monthly_credit_limit == 500
