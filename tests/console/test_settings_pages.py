"""The console's settings panels through Django's test client: notifications (threshold and
email switches), webhook endpoints (secret shown once, errors by their field, test event and
delivery log against a real loopback receiver), the saved card through the recorded-response
Stripe server and its signed webhook, and the auto top-up form. Each form is refused without
its CSRF token, and another user's endpoint is a 404 that changes nothing."""

from typing import Any
from uuid import uuid4

import pytest
from django.test import Client, TestCase

from accounts.models import User
from credits.console import notification_pages
from credits.console.topup_pages import minor_units
from credits.models import CreditAccount, Event, EventType
from credits.notifications import services as notifications
from credits.notifications.models import MAX_ENDPOINTS_PER_USER, WebhookEndpoint
from credits.payments.models import AutoTopup, AutoTopupDisabledReason, StripeCustomer
from tests.factories import registered_user
from tests.notifications.conftest import Receiver, receiver  # noqa: F401  (a fixture)
from tests.payments.conftest import deliver, stripe_settings  # noqa: F401  (a fixture)
from tests.stripe_support import StripeRecordedServer, build_event
from tests.stripe_support import stripe_server as stripe_server  # (a fixture)

pytestmark = pytest.mark.django_db


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ann() -> User:
    return registered_user(email="ann@example.com")


@pytest.fixture
def bob() -> User:
    return registered_user(email="bob@example.com")


@pytest.fixture
def allow_private(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True


@pytest.mark.parametrize(
    "path",
    ["/my-credits/notifications", "/my-credits/auto-topup", f"/my-credits/webhooks/{uuid4()}"],
)
def test_the_settings_pages_send_an_anonymous_visitor_to_the_login_page(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login?next=")


def test_the_navigation_links_both_settings_pages(ann: User) -> None:
    html = _client(ann).get("/my-credits").content.decode()
    assert 'href="/my-credits/notifications"' in html
    assert 'href="/my-credits/auto-topup"' in html


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/my-credits/notifications/settings", {"low_balance_threshold": "5"}),
        ("/my-credits/webhooks/new", {"url": "http://127.0.0.1:9/hook"}),
        ("/my-credits/auto-topup/card/remove", {}),
        (
            "/my-credits/auto-topup/save",
            {"threshold": "5", "package": "starter", "monthly_limit": "10"},
        ),
    ],
)
def test_a_settings_form_posted_without_the_csrf_token_is_refused(
    ann: User, allow_private: None, path: str, data: dict[str, str]
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(ann)
    assert client.post(path, data).status_code == 403
    assert notifications.notification_settings(user_id=ann.pk)["low_balance_threshold"] == 10
    assert not WebhookEndpoint.objects.filter(user=ann).exists()
    assert not AutoTopup.objects.filter(user=ann).exists()


# --- notifications ------------------------------------------------------------------------------


def test_the_notifications_page_shows_the_default_threshold_and_every_switch_on(
    ann: User,
) -> None:
    html = _client(ann).get("/my-credits/notifications").content.decode()
    assert 'id="low-balance-threshold"' in html and 'value="10"' in html
    assert html.count('name="email"') == len(notifications.EMAIL_TYPES)
    assert html.count('name="email" value="') == html.count("checked>")


def test_saving_the_threshold_with_a_thousands_separator_and_some_switches_off(
    ann: User,
) -> None:
    kept = [t for t in notifications.EMAIL_TYPES if t not in ("key.created", "credits.low")]
    response = _client(ann).post(
        "/my-credits/notifications/settings",
        {"low_balance_threshold": "1,500", "email": kept},
        follow=True,
    )
    assert response.status_code == 200
    assert "below 1,500 credits" in response.content.decode()
    saved = notifications.notification_settings(user_id=ann.pk)
    assert saved["low_balance_threshold"] == 1500
    assert saved["email"]["key.created"] is False and saved["email"]["credits.low"] is False
    assert all(saved["email"][t] for t in kept)
    assert CreditAccount.objects.get(pk=ann.pk).low_balance_threshold == 1500


def test_an_empty_threshold_turns_the_low_balance_notice_off(ann: User) -> None:
    response = _client(ann).post(
        "/my-credits/notifications/settings",
        {"low_balance_threshold": "", "email": list(notifications.EMAIL_TYPES)},
        follow=True,
    )
    assert "low-balance notices are off" in response.content.decode()
    assert notifications.notification_settings(user_id=ann.pk)["low_balance_threshold"] is None


@pytest.mark.parametrize("threshold", ["-5", "ten", "1.5"])
def test_a_bad_threshold_is_refused_by_its_field_and_nothing_is_saved(
    ann: User, threshold: str
) -> None:
    response = _client(ann).post(
        "/my-credits/notifications/settings", {"low_balance_threshold": threshold, "email": []}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="threshold-error"' in html and 'aria-invalid="true"' in html
    assert f'value="{threshold}"' in html  # what was typed stays in the field
    saved = notifications.notification_settings(user_id=ann.pk)
    assert saved["low_balance_threshold"] == 10
    assert all(saved["email"].values())  # the unticked switches were not saved either


# --- webhook endpoints --------------------------------------------------------------------------


def test_adding_an_endpoint_shows_its_secret_once_and_never_caches_it(
    ann: User, allow_private: None
) -> None:
    client = _client(ann)
    response = client.post(
        "/my-credits/webhooks/new",
        {"url": "http://127.0.0.1:9/hook", "events": ["payment.succeeded", "credits.low"]},
    )
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    endpoint = WebhookEndpoint.objects.get(user=ann)
    assert endpoint.events == ["credits.low", "payment.succeeded"]
    html = response.content.decode()
    secret = html.split('id="webhook-secret" class="wide" readonly value="')[1].split('"')[0]
    assert secret.startswith("whsec_")
    again = client.get("/my-credits/notifications")
    assert secret not in again.content.decode()
    assert "credits.low, payment.succeeded" in again.content.decode()


def test_an_endpoint_with_no_event_ticked_gets_every_type(ann: User, allow_private: None) -> None:
    assert (
        _client(ann).post("/my-credits/webhooks/new", {"url": "http://127.0.0.1:9/h"}).status_code
        == 201
    )
    assert WebhookEndpoint.objects.get(user=ann).events is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://127.0.0.1/hook", "The URL&#x27;s host resolves to a non-public address."),
        ("http://example.com/hook", "The URL must use https://."),
        ("ftp://example.com/x", "The URL must use https://."),
    ],
)
def test_a_refused_url_is_shown_next_to_the_url_field(ann: User, url: str, says: str) -> None:
    response = _client(ann).post("/my-credits/webhooks/new", {"url": url})
    assert response.status_code == 400
    html = response.content.decode()
    error = html.split('id="webhook-url-error" role="alert">')[1].split("</p>")[0]
    assert error == says
    assert f'value="{url}"' in html
    assert not WebhookEndpoint.objects.filter(user=ann).exists()


def test_the_eleventh_endpoint_is_refused_next_to_the_url_field(
    ann: User, allow_private: None
) -> None:
    for n in range(MAX_ENDPOINTS_PER_USER):
        notifications.webhook_endpoint_create(user=ann, url=f"http://127.0.0.1:9/{n}", events=None)
    client = _client(ann)
    assert 'id="webhook-limit"' in client.get("/my-credits/notifications").content.decode()
    response = client.post("/my-credits/webhooks/new", {"url": "http://127.0.0.1:9/x"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "At most 10 webhook endpoints" in html.split('id="webhook-url-error"')[1]
    assert WebhookEndpoint.objects.filter(user=ann).count() == MAX_ENDPOINTS_PER_USER


def test_an_unknown_event_type_is_refused_next_to_the_events(
    ann: User, allow_private: None
) -> None:
    response = _client(ann).post(
        "/my-credits/webhooks/new", {"url": "http://127.0.0.1:9/h", "events": ["credits.lost"]}
    )
    assert response.status_code == 400
    assert 'id="webhook-events-error"' in response.content.decode()
    assert not WebhookEndpoint.objects.filter(user=ann).exists()


def test_another_users_endpoint_is_a_404_to_view_test_or_delete_and_is_left_alone(
    ann: User, bob: User, allow_private: None
) -> None:
    endpoint, _ = notifications.webhook_endpoint_create(
        user=bob, url="http://127.0.0.1:9/bob", events=None
    )
    client = _client(ann)
    for path in (f"/my-credits/webhooks/{endpoint.pk}", "/my-credits/webhooks/not-a-uuid"):
        response = client.get(path)
        assert response.status_code == 404
        assert "No webhook endpoint of yours" in response.content.decode()
    assert client.post(f"/my-credits/webhooks/{endpoint.pk}/test").status_code == 404
    assert client.post(f"/my-credits/webhooks/{endpoint.pk}/delete").status_code == 404
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
    assert not Event.objects.filter(type=EventType.WEBHOOK_TEST).exists()
    assert "127.0.0.1:9/bob" not in client.get("/my-credits/notifications").content.decode()


def test_deleting_an_endpoint_removes_it(ann: User, allow_private: None) -> None:
    endpoint, _ = notifications.webhook_endpoint_create(
        user=ann, url="http://127.0.0.1:9/gone", events=None
    )
    response = _client(ann).post(f"/my-credits/webhooks/{endpoint.pk}/delete", follow=True)
    assert "Deleted the endpoint http://127.0.0.1:9/gone" in response.content.decode()
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_a_test_event_reaches_the_receiver_signed_and_appears_in_the_delivery_log(
    ann: User,
    allow_private: None,
    receiver: Receiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, secret = notifications.webhook_endpoint_create(
        user=ann, url=receiver.url, events=["credits.low"]
    )
    receiver.secrets.append(secret)
    receiver.statuses.append(500)  # the first attempt fails: the log shows both
    client = _client(ann)
    # The service's after-commit work (dispatch, then the eager delivery task) runs here as if
    # the view's transaction had committed.
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(f"/my-credits/webhooks/{endpoint.pk}/test")
    assert response.status_code == 302
    assert response["Location"] == f"/my-credits/webhooks/{endpoint.pk}"
    event = Event.objects.get(type=EventType.WEBHOOK_TEST, user_id=ann.pk)
    delivery = endpoint.deliveries.get()
    notifications.delivery_resend(delivery_id=delivery.pk)  # the retry, without waiting 5 s
    notifications.delivery_attempt(delivery_id=delivery.pk)

    assert [p["type"] for p in receiver.verified()] == ["webhook.test", "webhook.test"]
    assert {p["id"] for p in receiver.verified()} == {event.public_id}
    html = client.get(f"/my-credits/webhooks/{endpoint.pk}").content.decode()
    rows = html.split("<tbody>")[1].split("</tbody>")[0].split("<tr ")[1:]
    assert len(rows) == 2
    newest, oldest = rows
    assert event.public_id in newest and "webhook.test" in newest
    assert '<td class="num status">200</td>' in newest
    assert '<td class="num status">500</td>' in oldest
    assert " UTC" in newest

    # One attempt a page: the newest, then the link to the older one.
    monkeypatch.setattr(notification_pages, "DELIVERIES_PAGE", 1)
    first = client.get(f"/my-credits/webhooks/{endpoint.pk}").content.decode()
    assert first.count('<td class="num status">') == 1 and ">200</td>" in first
    older = first.split('<a href="')[-1].split('" rel="next">Older attempts')[0]
    assert older.startswith("?before=")
    second = client.get(f"/my-credits/webhooks/{endpoint.pk}{older}").content.decode()
    assert second.count('<td class="num status">') == 1 and ">500</td>" in second
    assert "Older attempts" not in second
    # A position past any id (or not a number) is an empty page or the first, never an error.
    assert client.get(f"/my-credits/webhooks/{endpoint.pk}?before=9" + "9" * 40).status_code == 200


# --- the card and auto top-up -------------------------------------------------------------------


def _save_card(client: Client, server: StripeRecordedServer) -> None:
    """Add a card as the customer does: the button, Stripe's page, the signed webhook."""
    response = client.post("/my-credits/auto-topup/card")
    assert response.status_code == 302
    session_id = response["Location"].rsplit("/", 1)[-1]
    assert server.sessions[session_id]["mode"] == "setup"
    session = server.complete_setup(session_id, brand="mastercard", last4="4444", exp_month=3)
    assert deliver(build_event("checkout.session.completed", session)).status_code == 200


def test_without_a_card_the_page_offers_to_add_one_and_auto_top_up_is_off(ann: User) -> None:
    html = _client(ann).get("/my-credits/auto-topup").content.decode()
    assert "No card saved" in html and "Add a card" in html
    assert "<span>Off</span>" in html


def test_a_card_saved_through_stripe_is_shown_then_removed(
    ann: User,
    stripe_settings: StripeRecordedServer,  # noqa: F811
) -> None:
    client = _client(ann)
    _save_card(client, stripe_settings)
    html = client.get("/my-credits/auto-topup").content.decode()
    assert "<b>Mastercard</b> ending in <b>4444</b>, expires 03/2030" in html
    assert "Remove the card" in html
    response = client.post("/my-credits/auto-topup/card/remove", follow=True)
    assert "Card removed" in response.content.decode()
    assert StripeCustomer.objects.get(user=ann).payment_method_id is None


def test_stripes_return_address_opens_the_console_page_which_waits_for_the_card(
    ann: User,
) -> None:
    client = _client(ann)
    response = client.get("/settings/auto-topup?setup=success")
    assert response.status_code == 302
    assert response["Location"] == "/my-credits/auto-topup?setup=success"
    html = client.get(response["Location"]).content.decode()
    assert '<meta http-equiv="refresh" content="2; url=?setup=success&amp;try=1">' in html
    assert "waiting for its confirmation" in html
    # It stops after about a minute and says so.
    late = client.get("/my-credits/auto-topup?setup=success&try=29").content.decode()
    assert "try=30" in late
    stopped = client.get("/my-credits/auto-topup?setup=success&try=30").content.decode()
    assert "http-equiv" not in stopped and "Stripe has not confirmed your card yet" in stopped
    cancelled = client.get("/my-credits/auto-topup?setup=cancelled").content.decode()
    assert "No card was saved." in cancelled and "http-equiv" not in cancelled


def test_auto_top_up_is_enabled_with_the_limit_entered_in_dollars(
    ann: User,
    stripe_settings: StripeRecordedServer,  # noqa: F811
) -> None:
    client = _client(ann)
    _save_card(client, stripe_settings)
    response = client.post(
        "/my-credits/auto-topup/save",
        {"enabled": "on", "threshold": "1,000", "package": "starter", "monthly_limit": "$1,000.50"},
        follow=True,
    )
    assert response.status_code == 200
    config = AutoTopup.objects.get(user=ann)
    assert config.package is not None
    assert (config.enabled, config.threshold, config.package.slug, config.monthly_limit) == (
        True,
        1000,
        "starter",
        100050,
    )
    assert CreditAccount.objects.get(pk=ann.pk).auto_topup_threshold == 1000
    html = response.content.decode()
    assert "below 1,000 credits, Starter is bought" in html
    assert "at most $1,000.50 a month" in html
    assert 'value="$1,000.50"' in html


def test_enabling_without_a_card_is_refused_next_to_the_switch(ann: User) -> None:
    response = _client(ann).post(
        "/my-credits/auto-topup/save",
        {"enabled": "on", "threshold": "100", "package": "starter", "monthly_limit": "50"},
    )
    assert response.status_code == 400
    html = response.content.decode()
    error = html.split('id="enabled-error" role="alert">')[1].split("</p>")[0]
    assert error == "Save a card first: “Add a card” above."
    assert not AutoTopup.objects.filter(user=ann, enabled=True).exists()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"monthly_limit": "12.345"}, "limit-error", "Enter an amount"),
        ({"monthly_limit": "-5"}, "limit-error", "Enter an amount"),
        ({"monthly_limit": "1"}, "limit-error", "At least the package&#x27;s price, $4.99."),
        ({"threshold": "0"}, "threshold-error", "greater than or equal to 1"),
        ({"threshold": ""}, "threshold-error", "valid integer"),
        ({"package": "platinum"}, "package-error", "no package"),
    ],
)
def test_a_bad_auto_top_up_form_is_refused_by_its_field_and_saves_nothing(
    ann: User, data: dict[str, str], field: str, message: str
) -> None:
    body = {"threshold": "100", "package": "starter", "monthly_limit": "50", **data}
    response = _client(ann).post("/my-credits/auto-topup/save", body)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html.split(f'id="{field}" role="alert">')[1].split("</p>")[0]
    assert not AutoTopup.objects.filter(user=ann).exists()


def test_failures_and_the_reason_auto_top_up_turned_itself_off_are_shown(ann: User) -> None:
    AutoTopup.objects.create(
        user=ann,
        enabled=False,
        threshold=100,
        monthly_limit=5000,
        failures=3,
        disabled_reason=AutoTopupDisabledReason.PAYMENT_FAILURES,
    )
    html = _client(ann).get("/my-credits/auto-topup").content.decode()
    status = html.split('id="auto-topup-status">')[1].split("</p>")[0]
    assert "turned off because 3 charges in a row failed" in status
    assert "3 charges in a row failed." in status


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("$1,000.50", "usd", 100050), ("29.99", "usd", 2999), ("7", "usd", 700), ("100", "jpy", 100)],
)
def test_an_amount_in_dollars_becomes_exact_minor_units(
    text: str, currency: str, minor: int
) -> None:
    assert minor_units(text, currency) == minor


@pytest.mark.parametrize(
    "text", ["1.001", "abc", "-1", "NaN", "Infinity", "sNaN", "1.5", "1e400000"]
)
def test_what_is_not_an_amount_of_the_currency_is_refused(text: str) -> None:
    currency = "jpy" if text == "1.5" else "usd"
    with pytest.raises(ValueError):
        minor_units(text, currency)
