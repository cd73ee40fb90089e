"""Password guessing is throttled: per client address and email (10/min), and per email alone
(30/min) so that rotating X-Forwarded-For does not buy an attacker more guesses; a correct
password inside a throttled window is refused too, so guessing cannot be confirmed."""

from typing import Any

import pytest
from django.test import Client

from .conftest import Person

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's password


def _login(client: Client, email: str, password: str, **extra: Any) -> Any:
    return client.post(
        "/api/auth/login",
        {"email": email, "password": password},
        content_type="application/json",
        **extra,
    )


def test_the_eleventh_guess_in_a_minute_is_refused_even_with_the_right_password(
    alice: Person,
) -> None:
    client = Client()
    for _ in range(10):
        assert _login(client, "alice@example.com", "wrong password").status_code == 400
    refused = _login(client, "alice@example.com", PASSWORD)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert int(refused["Retry-After"]) >= 1
    assert "token" not in refused.json()


def test_the_email_case_does_not_reset_the_count(alice: Person) -> None:
    client = Client()
    for n in range(10):
        email = "ALICE@example.com" if n % 2 else "alice@EXAMPLE.com"
        _login(client, email, "wrong password")
    assert _login(client, "alice@example.com", PASSWORD).status_code == 429


def test_rotating_the_forwarded_address_still_hits_the_per_email_cap(alice: Person) -> None:
    client = Client()
    statuses = [
        _login(
            client, "alice@example.com", "wrong password", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}"
        ).status_code
        for n in range(31)
    ]
    assert statuses[:30] == [400] * 30
    assert statuses[30] == 429


def test_the_victim_can_log_in_from_elsewhere_while_one_address_is_throttled(
    alice: Person,
) -> None:
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(11):
        _login(attacker, "alice@example.com", "wrong password")
    assert _login(attacker, "alice@example.com", PASSWORD).status_code == 429
    victim = Client(REMOTE_ADDR="198.51.100.7")
    assert _login(victim, "alice@example.com", PASSWORD).status_code == 200


def test_wrong_passwords_and_unknown_emails_answer_alike(alice: Person) -> None:
    wrong = _login(Client(), "alice@example.com", "wrong password")
    unknown = _login(Client(), "nobody@example.com", "wrong password")
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json() == unknown.json()
