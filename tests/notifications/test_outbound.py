"""The SSRF guard's address rules, IPv4 and IPv6 (literals: no DNS involved), and the secret's
encryption at rest."""

from typing import Any

import pytest

from credits.notifications import outbound
from credits.notifications.secrets import secret_decrypt, secret_encrypt, secret_new


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104  (an address refused, not one bound to)
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[fc00::1]",
        "[ff02::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[::ffff:10.0.0.1]",
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "[64:ff9b::a9fe:a9fe]",
    ],
)
def test_non_public_addresses_are_refused(host: str) -> None:
    with pytest.raises(outbound.BlockedAddress):
        outbound.target_resolve(f"https://{host}/hook")


@pytest.mark.parametrize("host", ["93.184.215.14", "[2606:4700:4700::1111]"])
def test_public_addresses_are_allowed_and_pinned(host: str) -> None:
    target = outbound.target_resolve(f"https://{host}:8443/a/b?c=d")
    assert target.address == host.strip("[]")
    assert (target.port, target.path, target.scheme) == (8443, "/a/b?c=d", "https")


def test_allow_private_also_allows_http_and_loopback(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    assert outbound.target_resolve("http://127.0.0.1:8000/h").address == "127.0.0.1"


def test_without_allow_private_http_is_refused_even_to_a_public_address() -> None:
    with pytest.raises(outbound.BlockedAddress):
        outbound.target_resolve("http://93.184.215.14/hook")


def test_secrets_round_trip_and_never_appear_in_their_encrypted_form() -> None:
    secret = secret_new()
    token = secret_encrypt(secret)
    assert secret_decrypt(token) == secret
    assert secret[6:] not in token


def test_a_dedicated_key_changes_the_encryption(settings: Any) -> None:
    secret = secret_new()
    token = secret_encrypt(secret)
    settings.WEBHOOK_SECRETS_KEY = "another key entirely"
    from cryptography.fernet import InvalidToken

    with pytest.raises(InvalidToken):
        secret_decrypt(token)
    assert secret_decrypt(secret_encrypt(secret)) == secret
