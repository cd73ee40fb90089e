"""The client address every per-address limit counts (config.client_address)."""

import pytest
from django.http import HttpRequest
from django.test import RequestFactory, override_settings

from config.client_address import client_address


def _request(forwarded: str | None) -> HttpRequest:
    request = RequestFactory().get("/")
    request.META["REMOTE_ADDR"] = "10.0.0.1"
    if forwarded is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded
    return request


@pytest.mark.parametrize("forwarded", [None, "", "6.6.6.6", "6.6.6.6, 7.7.7.7"])
def test_without_trusted_proxies_the_header_is_ignored(forwarded: str | None) -> None:
    assert client_address(_request(forwarded)) == "10.0.0.1"


@pytest.mark.parametrize(
    ("count", "forwarded", "client"),
    [
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # the client's own entry is ignored
        (2, "6.6.6.6, 203.0.113.9, 10.1.1.1", "203.0.113.9"),
        (2, "203.0.113.9", "203.0.113.9"),  # fewer entries than proxies: the leftmost
        (1, " , 203.0.113.9 ", "203.0.113.9"),
        (1, "", "10.0.0.1"),
    ],
)
def test_the_client_is_the_entry_as_many_places_from_the_right_as_there_are_proxies(
    count: int, forwarded: str, client: str
) -> None:
    with override_settings(TRUSTED_PROXY_COUNT=count):
        assert client_address(_request(forwarded)) == client
