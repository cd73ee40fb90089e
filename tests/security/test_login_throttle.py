"""Password guessing is throttled: per client address and email (10/min), per email alone
(30/min) so that many client addresses do not buy an attacker more guesses, and per client
address across emails (20/min) so that password spraying (one password, many accounts) is
refused too; a correct password inside a throttled window is refused too, so guessing cannot
be confirmed. The client address is read as TRUSTED_PROXY_COUNT says (config.client_address):
an `X-Forwarded-For` the client wrote itself changes nothing."""

from typing import Any

import pytest
from django.test import Client, override_settings

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


@pytest.mark.parametrize(
    ("proxies", "refused_after"),
    [
        # TRUSTED_PROXY_COUNT=0 (the default): the header is the client's own words, ignored:
        # one client, refused by the per-address-and-email throttle.
        (0, 10),
        # Behind one trusted proxy each address is a distinct client (a botnet, say): the
        # per-email cap still holds.
        (1, 30),
    ],
)
def test_rotating_forwarded_addresses_buys_no_more_guesses_than_the_caps(
    alice: Person, proxies: int, refused_after: int
) -> None:
    client = Client()
    with override_settings(TRUSTED_PROXY_COUNT=proxies):
        statuses = [
            _login(
                client, "alice@example.com", "wrong password", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}"
            ).status_code
            for n in range(refused_after + 1)
        ]
    assert statuses == [400] * refused_after + [429]


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


def test_password_spraying_from_one_client_is_refused_after_20_attempts(alice: Person) -> None:
    """The attack that found the hole: one password tried on 40 addresses from one client."""
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    statuses = [
        _login(attacker, f"victim{n}@example.com", "Summer2026!").status_code for n in range(40)
    ]
    assert statuses[:20] == [400] * 20
    assert set(statuses[20:]) == {429}
    # Another client is not affected.
    assert (
        _login(Client(REMOTE_ADDR="198.51.100.7"), "alice@example.com", PASSWORD).status_code == 200
    )


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_spraying_is_counted_per_real_client_behind_the_proxy(alice: Person) -> None:
    """Behind one proxy, REMOTE_ADDR is the proxy for everyone: the client is the rightmost
    forwarded entry, and whatever the client put left of it is ignored."""
    proxy = Client(REMOTE_ADDR="10.0.0.1")
    statuses = [
        _login(
            proxy,
            f"victim{n}@example.com",
            "Summer2026!",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.9",
        ).status_code
        for n in range(21)
    ]
    assert statuses == [400] * 20 + [429]
    other = _login(
        proxy, "alice@example.com", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.9, 198.51.100.7"
    )
    assert other.status_code == 200
