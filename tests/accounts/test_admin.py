from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts import service_tokens
from accounts.models import ApiKey, ServiceToken, User
from accounts.services import api_key_create
from credits.models import CreditAccount, Event
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    admin = User.objects.create_superuser("root@example.com", "correct horse battery staple")
    client = Client()
    client.force_login(admin)
    return client


def test_the_user_list_searches_by_email(staff_client: Client) -> None:
    UserFactory.create(email="findme@example.com")
    UserFactory.create(email="other@example.com")
    response = staff_client.get("/admin/accounts/user/", {"q": "FINDME"})
    assert response.status_code == 200
    assert b"findme@example.com" in response.content
    assert b"other@example.com" not in response.content


def test_a_user_added_in_the_admin_starts_with_the_signup_grant(staff_client: Client) -> None:
    response = staff_client.post(
        "/admin/accounts/user/add/",
        {
            "email": "Added@Example.com",
            "usable_password": "true",
            "password1": "a-long and unusual passphrase 42",
            "password2": "a-long and unusual passphrase 42",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    user = User.objects.get(email="added@example.com")
    assert user.check_password("a-long and unusual passphrase 42")
    assert CreditAccount.objects.get(pk=user.pk).balance == 100


def test_key_pages_never_show_the_digest_and_offer_no_add(staff_client: Client) -> None:
    key, raw = api_key_create(user=UserFactory.create(), name="visible-name")
    listing = staff_client.get("/admin/accounts/apikey/")
    detail = staff_client.get(f"/admin/accounts/apikey/{key.pk}/change/")
    for page in (listing, detail):
        assert page.status_code == 200
        assert key.digest.encode() not in page.content
        assert raw.encode() not in page.content
    assert b"visible-name" in listing.content
    assert staff_client.get("/admin/accounts/apikey/add/").status_code == 403


def test_the_revoke_action_revokes_keys(staff_client: Client) -> None:
    key, _ = api_key_create(user=UserFactory.create(), name="k")
    response = staff_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke", "_selected_action": [str(key.pk)]},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert not ApiKey.objects.live().exists()


def test_the_revoke_action_writes_one_key_revoked_event_however_often_run(
    staff_client: Client,
) -> None:
    key, _ = api_key_create(user=UserFactory.create(), name="k")
    for _ in range(2):
        staff_client.post(
            "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [str(key.pk)]}
        )
    [event] = Event.objects.filter(type="key.revoked")
    assert (event.user_id, event.cause) == (key.user_id, f"key.revoked:{key.pk}")
    assert event.data == {"key": {"id": str(key.pk), "name": "k", "prefix": key.prefix}}


def test_the_service_token_revoke_action_acts_at_once_in_this_process(
    staff_client: Client,
) -> None:
    token, raw = service_tokens.service_token_create(name="gateway")
    assert service_tokens.service_token_verify(raw) == token.pk  # now remembered
    detail = staff_client.get(f"/admin/accounts/servicetoken/{token.pk}/change/")
    assert detail.status_code == 200 and token.digest.encode() not in detail.content
    assert staff_client.get("/admin/accounts/servicetoken/add/").status_code == 403
    response = staff_client.post(
        "/admin/accounts/servicetoken/",
        {"action": "revoke", "_selected_action": [str(token.pk)]},
    )
    assert response.status_code == 302
    assert ServiceToken.objects.get(pk=token.pk).revoked_at is not None
    assert service_tokens.service_token_verify(raw) is None


def test_revoking_an_already_revoked_key_keeps_its_time(staff_client: Client) -> None:
    key, _ = api_key_create(user=UserFactory.create(), name="k")
    earlier = timezone.now() - timedelta(days=1)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=earlier)
    staff_client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [str(key.pk)]}
    )
    key.refresh_from_db()
    assert key.revoked_at == earlier
