import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.response import Response
from rest_framework.test import APIClient

from accounts.api_keys import api_key_resolve
from accounts.models import ApiKey, User
from accounts.services import api_key_create
from credits.models import CreditAccount
from tests.factories import UserFactory
from tests.mail_support import outbox_token

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def client() -> APIClient:
    return APIClient()


def _error(response: Response) -> dict[str, Any]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    return body["error"]


def _login(client: APIClient, email: str, password: str = PASSWORD) -> Response:
    return client.post("/api/auth/login", {"email": email, "password": password}, format="json")


def _token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user)[1]}")
    return client


def _register_alice(client: APIClient) -> Any:
    return client.post(
        "/api/auth/register", {"email": "Alice@Example.com", "password": PASSWORD}, format="json"
    )


class TestRegister:
    def test_registering_returns_the_user_and_verifying_grants_the_signup_credits(
        self, client: APIClient
    ) -> None:
        response = _register_alice(client)
        assert response.status_code == 201
        user = User.objects.get()
        assert response.json() == {
            "user": {
                "id": str(user.pk),
                "email": "alice@example.com",
                "email_verified": False,
                "invite_code": user.invite_code,
            }
        }
        assert CreditAccount.objects.get(pk=user.pk).balance == 0  # EMAIL_VERIFICATION=required
        token = outbox_token("alice@example.com", "accounts/email/verify_email")
        verified = client.post("/api/auth/verify-email", {"token": token}, format="json")
        assert verified.status_code == 200
        assert verified.json()["user"]["email_verified"] is True
        assert CreditAccount.objects.get(pk=user.pk).balance == 100

    @override_settings(EMAIL_VERIFICATION="off")
    def test_with_verification_off_registering_grants_the_signup_credits_at_once(
        self, client: APIClient
    ) -> None:
        response = _register_alice(client)
        assert response.status_code == 201
        assert response.json()["user"]["email_verified"] is False
        assert CreditAccount.objects.get(pk=User.objects.get().pk).balance == 100

    def test_an_empty_invite_code_means_none(self, client: APIClient) -> None:
        for code in ("", None):
            response = client.post(
                "/api/auth/register",
                {"email": f"u{code}@example.com", "password": PASSWORD, "invite_code": code},
                format="json",
            )
            assert response.status_code == 201

    @pytest.mark.parametrize("code", ["NOSUCHCODE", "X" * 65, "X" * 5000])
    def test_an_unknown_invite_code_is_400_and_creates_no_user(
        self, client: APIClient, code: str
    ) -> None:
        response = client.post(
            "/api/auth/register",
            {"email": "bob@example.com", "password": PASSWORD, "invite_code": code},
            format="json",
        )
        assert response.status_code == 400
        assert _error(response)["code"] == "invalid_invite_code"
        assert not User.objects.exists()

    @pytest.mark.parametrize(
        ("body", "status", "code", "field"),
        [
            ({"password": PASSWORD}, 400, "missing_field", "email"),
            ({"email": "c@example.com"}, 400, "missing_field", "password"),
            ({"email": "", "password": PASSWORD}, 400, "missing_field", "email"),
            ({"email": "c@example.com", "password": ""}, 400, "missing_field", "password"),
            ({"email": "nope", "password": PASSWORD}, 400, "invalid_email", "email"),
            ({"email": "c@example.com", "password": "12345678"}, 400, "weak_password", "password"),
            ({"email": ["c@example.com"], "password": PASSWORD}, 400, "invalid_request", "email"),
        ],
    )
    def test_bad_input_is_a_400_naming_the_field(
        self, client: APIClient, body: dict[str, Any], status: int, code: str, field: str
    ) -> None:
        response = client.post("/api/auth/register", body, format="json")
        assert response.status_code == status
        error = _error(response)
        assert (error["code"], error["field"]) == (code, field)
        assert field in error["message"]
        assert not User.objects.exists()

    def test_a_weak_password_message_says_what_is_wrong(self, client: APIClient) -> None:
        response = client.post(
            "/api/auth/register", {"email": "d@example.com", "password": "abc"}, format="json"
        )
        assert "too short" in _error(response)["message"]

    def test_a_taken_email_in_any_case_is_400(self, client: APIClient) -> None:
        UserFactory.create(email="erin@example.com")
        response = client.post(
            "/api/auth/register", {"email": "ERIN@example.COM", "password": PASSWORD}, format="json"
        )
        assert response.status_code == 400
        assert _error(response)["code"] == "email_taken"

    @pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
    def test_a_body_that_is_not_a_json_object_is_400_invalid_json(
        self, client: APIClient, raw: bytes
    ) -> None:
        response = client.post("/api/auth/register", raw, content_type="application/json")
        assert response.status_code == 400
        assert _error(response)["code"] == "invalid_json"


class TestLoginAndLogout:
    def test_login_returns_a_token_and_sets_a_session_cookie(self, client: APIClient) -> None:
        user = UserFactory.create(email="frank@example.com")
        response = _login(client, "Frank@Example.com")
        assert response.status_code == 200
        body = response.json()  # type: ignore[attr-defined]
        assert body["user"] == {
            "id": str(user.pk),
            "email": user.email,
            "email_verified": False,
            "invite_code": user.invite_code,
        }
        assert "sessionid" in response.cookies
        # knox keeps a digest, never the token itself
        stored = AuthToken.objects.get(user=user)
        assert body["token"] not in stored.digest
        token_client = APIClient()
        token_client.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
        assert token_client.get("/api/user/keys").status_code == 200
        assert client.get("/api/user/keys").status_code == 200  # by the session cookie

    def test_each_login_gets_its_own_token(self, client: APIClient) -> None:
        user = UserFactory.create()
        tokens = {_login(APIClient(), user.email).json()["token"] for _ in range(2)}  # type: ignore[attr-defined]
        assert len(tokens) == 2
        assert AuthToken.objects.filter(user=user).count() == 2

    @pytest.mark.parametrize(
        ("email", "password"),
        [("grace@example.com", "wrong password"), ("nobody@example.com", PASSWORD)],
    )
    def test_wrong_credentials_are_400_invalid_credentials(
        self, client: APIClient, email: str, password: str
    ) -> None:
        UserFactory.create(email="grace@example.com")
        response = _login(client, email, password)
        assert response.status_code == 400
        assert _error(response)["code"] == "invalid_credentials"
        assert not AuthToken.objects.exists()

    def test_a_deactivated_user_cannot_log_in(self, client: APIClient) -> None:
        UserFactory.create(email="henry@example.com", is_active=False)
        assert _login(client, "henry@example.com").status_code == 400

    def test_login_with_a_missing_field_is_400_naming_it(self, client: APIClient) -> None:
        response = client.post("/api/auth/login", {"email": "x@example.com"}, format="json")
        assert response.status_code == 400
        assert (_error(response)["code"], _error(response)["field"]) == (
            "missing_field",
            "password",
        )

    def test_repeated_logins_are_throttled_per_address_and_email(self, client: APIClient) -> None:
        UserFactory.create(email="ivan@example.com")
        for _ in range(10):
            assert _login(client, "ivan@example.com", "wrong").status_code == 400
        response = _login(client, "ivan@example.com")  # even the right password, for now
        assert response.status_code == 429
        assert _error(response)["code"] == "throttled"
        assert int(response["Retry-After"]) >= 1
        # Another email from the same address is counted separately.
        UserFactory.create(email="judy@example.com")
        assert _login(client, "judy@example.com").status_code == 200

    def test_one_email_is_throttled_from_any_address(self, client: APIClient) -> None:
        UserFactory.create(email="kate@example.com")
        statuses = [
            APIClient(REMOTE_ADDR=f"10.0.0.{n}")
            .post("/api/auth/login", {"email": "kate@example.com", "password": "x"}, format="json")
            .status_code
            for n in range(31)
        ]
        assert statuses[:30] == [400] * 30
        assert statuses[30] == 429

    def test_logout_ends_that_token_only(self) -> None:
        user = UserFactory.create()
        first, second = APIClient(), APIClient()
        for client in (first, second):
            token = _login(client, user.email).json()["token"]  # type: ignore[attr-defined]
            client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert first.post("/api/auth/logout").status_code == 204
        first.cookies.clear()
        assert first.get("/api/user/keys").status_code == 401
        assert second.get("/api/user/keys").status_code == 200
        assert AuthToken.objects.filter(user=user).count() == 1

    def test_logout_ends_the_session(self, client: APIClient) -> None:
        user = UserFactory.create()
        _login(client, user.email)
        assert client.get("/api/user/keys").status_code == 200
        assert client.post("/api/auth/logout").status_code == 204
        assert client.get("/api/user/keys").status_code == 401

    def test_logout_when_anonymous_is_401(self, client: APIClient) -> None:
        response = client.post("/api/auth/logout")
        assert response.status_code == 401
        assert _error(response)["code"] == "not_authenticated"


class TestApiKeys:
    def test_create_list_revoke(self) -> None:
        user = UserFactory.create()
        client = _token_client(user)
        expires = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
        created = client.post(
            "/api/user/keys",
            {"name": "laptop", "expires_at": expires.isoformat().replace("+00:00", "Z")},
            format="json",
        )
        assert created.status_code == 201
        body = created.json()
        assert set(body) == {"id", "name", "prefix", "key", "created_at", "expires_at"}
        assert body["key"].startswith("sk-kimi-") and body["key"].startswith(body["prefix"])
        assert RFC3339.match(body["created_at"]) and RFC3339.match(body["expires_at"])
        assert body["expires_at"] == expires.strftime("%Y-%m-%dT%H:%M:%SZ")

        listed = client.get("/api/user/keys").json()
        assert listed == [
            {
                "id": body["id"],
                "name": "laptop",
                "prefix": body["prefix"],
                "created_at": body["created_at"],
                "last_used_at": None,
                "expires_at": body["expires_at"],
                # Spend controls and rotation state (CONTRACT.md part 2, issue 18).
                "budget": None,
                "allowed_models": None,
                "spent": 0,
                "period_resets_at": None,
                "previous_expires_at": None,
            }
        ]
        assert api_key_resolve(body["key"]) is not None
        assert client.delete(f"/api/user/keys/{body['id']}").status_code == 204
        assert client.delete(f"/api/user/keys/{body['id']}").status_code == 204  # again: 204
        assert client.get("/api/user/keys").json() == []
        assert api_key_resolve(body["key"]) is None

    def test_the_list_shows_last_used_and_hides_expired_keys(self) -> None:
        user = UserFactory.create()
        _, raw = api_key_create(user=user, name="used")
        expired, _ = api_key_create(user=user, name="expired")
        ApiKey.objects.filter(pk=expired.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        api_key_resolve(raw)
        listed = _token_client(user).get("/api/user/keys").json()
        assert [k["name"] for k in listed] == ["used"]
        assert RFC3339.match(listed[0]["last_used_at"])

    def test_the_secret_is_never_in_the_list(self) -> None:
        user = UserFactory.create()
        _, raw = api_key_create(user=user, name="k")
        assert raw not in _token_client(user).get("/api/user/keys").content.decode()

    def test_a_user_never_sees_or_revokes_another_users_key(self) -> None:
        owner, intruder = UserFactory.create(), UserFactory.create()
        key, raw = api_key_create(user=owner, name="owners")
        client = _token_client(intruder)
        assert client.get("/api/user/keys").json() == []
        response = client.delete(f"/api/user/keys/{key.pk}")
        assert response.status_code == 404
        assert _error(response)["code"] == "key_not_found"
        assert api_key_resolve(raw) is not None

    def test_an_unknown_or_malformed_key_id_is_404(self) -> None:
        client = _token_client(UserFactory.create())
        for key_id in ("not-a-uuid", "5c1f8a43-2c5b-4a39-9c44-7e0b5a3c9e01"):
            response = client.delete(f"/api/user/keys/{key_id}")
            assert response.status_code == 404
            assert _error(response)["code"] == "key_not_found"

    @override_settings(MAX_KEYS_PER_USER=2)
    def test_the_key_cap_is_400_too_many_keys(self) -> None:
        client = _token_client(UserFactory.create())
        for name in ("a", "b"):
            assert client.post("/api/user/keys", {"name": name}, format="json").status_code == 201
        response = client.post("/api/user/keys", {"name": "c"}, format="json")
        assert response.status_code == 400
        assert _error(response)["code"] == "too_many_keys"

    @pytest.mark.parametrize(
        ("body", "code", "field"),
        [
            ({}, "missing_field", "name"),
            ({"name": ""}, "missing_field", "name"),
            ({"name": "n" * 101}, "invalid_request", "name"),
            ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "invalid_request", "expires_at"),
            ({"name": "k", "expires_at": "next tuesday"}, "invalid_request", "expires_at"),
        ],
    )
    def test_bad_key_input_is_400_naming_the_field(
        self, body: dict[str, Any], code: str, field: str
    ) -> None:
        response = _token_client(UserFactory.create()).post("/api/user/keys", body, format="json")
        assert response.status_code == 400
        assert (_error(response)["code"], _error(response)["field"]) == (code, field)
        assert not ApiKey.objects.exists()

    def test_bad_json_is_400(self) -> None:
        response = _token_client(UserFactory.create()).post(
            "/api/user/keys", b"{", content_type="application/json"
        )
        assert response.status_code == 400
        assert _error(response)["code"] == "invalid_json"

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("get", "/api/user/keys"),
            ("post", "/api/user/keys"),
            ("delete", "/api/user/keys/5c1f8a43-2c5b-4a39-9c44-7e0b5a3c9e01"),
        ],
    )
    def test_anonymous_calls_are_401(self, client: APIClient, method: str, path: str) -> None:
        response = getattr(client, method)(path)
        assert response.status_code == 401
        assert _error(response)["code"] == "not_authenticated"

    def test_an_api_key_does_not_open_the_key_management_api(self) -> None:
        user = UserFactory.create()
        _, raw = api_key_create(user=user, name="k")
        response = APIClient().get("/api/user/keys", HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 401

    def test_a_revoked_login_token_is_401(self) -> None:
        user = UserFactory.create()
        instance, token = AuthToken.objects.create(user)
        instance.delete()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        response = client.get("/api/user/keys")
        assert response.status_code == 401
