"""The notifications API: settings, webhook endpoints, their test event and delivery log.
Bad input is a 400 naming the field and changes nothing; other users' endpoints are 404."""

import base64
from typing import Any

import pytest

from credits import services as ledger
from credits.models import CreditAccount
from credits.notifications.models import EmailPreference, WebhookEndpoint
from credits.notifications.secrets import secret_decrypt
from tests.accounts.test_apis import _token_client
from tests.factories import UserFactory

from .conftest import Receiver

pytestmark = pytest.mark.django_db


def test_notification_settings_default_to_every_type_on_and_a_threshold_of_ten() -> None:
    user = UserFactory.create()
    ledger.account_open(user_id=user.pk)

    body = _token_client(user).get("/api/user/notifications").json()

    assert body["low_balance_threshold"] == 10
    assert body["email"]["credits.low"] is True
    assert "webhook.test" not in body["email"]
    assert len(body["email"]) == 13 and all(body["email"].values())


def test_patch_changes_any_part_and_answers_the_whole() -> None:
    user = UserFactory.create()
    ledger.account_open(user_id=user.pk)
    client = _token_client(user)

    body = client.patch(
        "/api/user/notifications",
        {"low_balance_threshold": 500, "email": {"key.created": False}},
        format="json",
    ).json()
    assert body["low_balance_threshold"] == 500
    assert body["email"]["key.created"] is False and body["email"]["credits.low"] is True

    body = client.patch(
        "/api/user/notifications", {"low_balance_threshold": None}, format="json"
    ).json()
    assert body["low_balance_threshold"] is None
    assert body["email"]["key.created"] is False  # untouched
    assert CreditAccount.objects.get(pk=user.pk).low_balance_threshold is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": {"credits.low": False, "credits.lots": False}}, "email.credits.lots"),
        ({"email": {"webhook.test": False}}, "email.webhook.test"),
        ({"email": {"credits.low": "no"}}, "email.credits.low"),
        ({"email": ["credits.low"]}, "email"),
        ({"low_balance_threshold": -1, "email": {"key.created": False}}, "low_balance_threshold"),
        ({"low_balance_threshold": "10"}, "low_balance_threshold"),
        ({"low_balance_threshold": True}, "low_balance_threshold"),
        ({"threshold": 5}, "threshold"),
    ],
)
def test_bad_settings_are_a_400_naming_the_field_and_change_nothing(
    body: dict[str, Any], field: str
) -> None:
    user = UserFactory.create()
    ledger.account_open(user_id=user.pk)

    response = _token_client(user).patch("/api/user/notifications", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert not EmailPreference.objects.exists()
    assert CreditAccount.objects.get(pk=user.pk).low_balance_threshold == 10


def test_creating_a_webhook_shows_its_secret_once_and_stores_it_encrypted(
    allow_private: None,
) -> None:
    user = UserFactory.create()
    client = _token_client(user)

    response = client.post(
        "/api/user/webhooks",
        {"url": "http://127.0.0.1:9/hook", "events": ["credits.low", "payment.succeeded"]},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "url", "events", "enabled", "created_at", "secret"}
    assert body["events"] == ["credits.low", "payment.succeeded"] and body["enabled"] is True
    secret = body["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    stored = WebhookEndpoint.objects.get(pk=body["id"])
    assert secret not in stored.secret_encrypted and secret[6:] not in stored.secret_encrypted
    assert secret_decrypt(stored.secret_encrypted) == secret

    [listed] = client.get("/api/user/webhooks").json()
    assert "secret" not in listed and listed["id"] == body["id"]
    assert listed["events"] == ["credits.low", "payment.succeeded"]


def test_a_webhook_without_events_gets_every_type(allow_private: None) -> None:
    body = (
        _token_client(UserFactory.create())
        .post("/api/user/webhooks", {"url": "http://127.0.0.1:9/hook"}, format="json")
        .json()
    )
    assert body["events"] is None


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.8/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fe80::1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
        "not a url",
    ],
)
def test_a_webhook_url_that_is_not_public_https_is_refused(url: str) -> None:
    response = _token_client(UserFactory.create()).post(
        "/api/user/webhooks", {"url": url}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhook_url"
    assert response.json()["error"]["field"] == "url"
    assert not WebhookEndpoint.objects.exists()


def test_an_unknown_event_type_is_refused() -> None:
    response = _token_client(UserFactory.create()).post(
        "/api/user/webhooks", {"url": "https://example.com/h", "events": ["nope"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"].startswith("events")


def test_at_most_ten_webhooks_per_user(allow_private: None) -> None:
    user = UserFactory.create()
    client = _token_client(user)
    for i in range(10):
        url = f"http://127.0.0.1:9/{i}"
        assert client.post("/api/user/webhooks", {"url": url}, format="json").status_code == 201

    response = client.post("/api/user/webhooks", {"url": "http://127.0.0.1:9/x"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_webhooks"
    assert WebhookEndpoint.objects.filter(user=user).count() == 10


def test_other_users_endpoints_are_not_found(allow_private: None) -> None:
    owner, stranger = UserFactory.create(), UserFactory.create()
    endpoint_id = (
        _token_client(owner)
        .post("/api/user/webhooks", {"url": "http://127.0.0.1:9/hook"}, format="json")
        .json()["id"]
    )
    client = _token_client(stranger)

    assert client.delete(f"/api/user/webhooks/{endpoint_id}").status_code == 404
    assert client.post(f"/api/user/webhooks/{endpoint_id}/test").status_code == 404
    response = client.get(f"/api/user/webhooks/{endpoint_id}/deliveries")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "webhook_not_found"
    assert client.get("/api/user/webhooks").json() == []
    assert client.delete("/api/user/webhooks/not-a-uuid").status_code == 404
    assert WebhookEndpoint.objects.filter(pk=endpoint_id).exists()


def test_delete_removes_the_endpoint(allow_private: None) -> None:
    client = _token_client(UserFactory.create())
    endpoint_id = client.post(
        "/api/user/webhooks", {"url": "http://127.0.0.1:9/hook"}, format="json"
    ).json()["id"]

    assert client.delete(f"/api/user/webhooks/{endpoint_id}").status_code == 204
    assert client.get("/api/user/webhooks").json() == []


@pytest.mark.django_db(transaction=True)
def test_the_test_event_is_delivered_and_the_log_pages_newest_first(
    allow_private: None, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("credits.notifications.views.DELIVERIES_PAGE_SIZE", 2)
    client = _token_client(UserFactory.create())
    created = client.post("/api/user/webhooks", {"url": receiver.url}, format="json").json()
    receiver.secrets.append(created["secret"])
    sent = []
    for _ in range(3):
        response = client.post(f"/api/user/webhooks/{created['id']}/test")
        assert response.status_code == 202
        sent.append(response.json()["event_id"])

    assert [p["id"] for p in receiver.verified()] == sent
    first = client.get(f"/api/user/webhooks/{created['id']}/deliveries").json()
    assert [r["event_id"] for r in first["results"]] == sent[::-1][:2]
    row = first["results"][0]
    assert row == {
        "event_id": sent[2],
        "type": "webhook.test",
        "attempt": 1,
        "status_code": 200,
        "error": None,
        "created_at": row["created_at"],
        "next_attempt_at": None,
    }
    second = client.get(first["next"]).json()
    assert [r["event_id"] for r in second["results"]] == [sent[0]]
    assert second["next"] is None


def test_a_forged_cursor_is_a_400(allow_private: None) -> None:
    client = _token_client(UserFactory.create())
    endpoint_id = client.post(
        "/api/user/webhooks", {"url": "http://127.0.0.1:9/hook"}, format="json"
    ).json()["id"]

    response = client.get(f"/api/user/webhooks/{endpoint_id}/deliveries?cursor=eyJiIjoxfQ")

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "cursor"


def test_the_schema_documents_the_notifications_api(client: Any) -> None:
    paths = client.get("/api/schema/").json()["paths"]
    assert {"get", "patch"} <= set(paths["/api/user/notifications"])
    assert {"get", "post"} <= set(paths["/api/user/webhooks"])
    assert "delete" in paths["/api/user/webhooks/{endpoint_id}"]
    assert "post" in paths["/api/user/webhooks/{endpoint_id}/test"]
    assert "get" in paths["/api/user/webhooks/{endpoint_id}/deliveries"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_never_pass_ten_endpoints(allow_private: None) -> None:
    from config.errors import ApplicationError
    from credits.notifications import services
    from tests.concurrency import run_together

    user = UserFactory.create()
    for i in range(7):
        services.webhook_endpoint_create(user=user, url=f"http://127.0.0.1:9/{i}", events=None)

    results = run_together(
        6,
        lambda i: services.webhook_endpoint_create(
            user=user, url=f"http://127.0.0.1:9/race{i}", events=None
        ),
    )

    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(refused) == 3 and {r.code for r in refused} == {"too_many_webhooks"}
    assert WebhookEndpoint.objects.filter(user=user).count() == 10
