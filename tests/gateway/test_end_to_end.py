"""The contract end to end: the official `openai` and `anthropic` SDKs talk to a minimal gateway
(tests/gateway/minimal_gateway.py) that calls authorize and settle on a live server over HTTP."""

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from credits import services
from credits.gateway.models import UsageRecord
from credits.models import CreditAccount, EntryKind, LedgerEntry
from credits.reconciliation import reconcile
from tests.gateway.conftest import RATE_LIMITED_20_PER_MINUTE, funded_customer, start_of_next
from tests.gateway.minimal_gateway import running_gateway

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("backend")]

MODEL = "kimi-k2-0905"
MESSAGES: Any = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def gateway_url(live_server: Any, service_token: str) -> Iterator[str]:
    with running_gateway(live_server.url, service_token) as url:
        yield url


def openai_client(gateway_url: str, key: str) -> openai.OpenAI:
    # max_retries=0: the SDK would otherwise retry a 429 (and a 5xx) by itself.
    return openai.OpenAI(api_key=key, base_url=f"{gateway_url}/v1", max_retries=0, timeout=10)


def anthropic_client(gateway_url: str, key: str) -> anthropic.Anthropic:
    # The Anthropic SDK appends /v1/messages itself: its base URL is the gateway's root.
    return anthropic.Anthropic(api_key=key, base_url=gateway_url, max_retries=0, timeout=10)


def charges_of(user_id: Any) -> int:
    return LedgerEntry.objects.filter(account_id=user_id, kind=EntryKind.CHARGE).count()


def test_openai_sdk_success_shows_the_headers_and_is_charged_once(gateway_url: str) -> None:
    start_of_next("minute")
    customer = funded_customer(522)
    client = openai_client(gateway_url, customer.raw_key)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the stub."
    assert raw.headers["X-RateLimit-Limit"] == "60"
    assert raw.headers["X-RateLimit-Remaining"] == "59"
    assert raw.headers["x-ratelimit-limit-requests"] == "60"
    assert raw.headers["x-ratelimit-remaining-requests"] == "59"
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert raw.headers["X-Credits-Remaining"] == "521"
    assert "anthropic-ratelimit-requests-limit" not in raw.headers
    assert charges_of(customer.user.pk) == 1
    record = UsageRecord.objects.get()
    assert (record.prompt_tokens, record.completion_tokens, record.charged) == (12, 5, 1)
    assert CreditAccount.objects.get(pk=customer.user.pk).balance == 521


def test_anthropic_sdk_success_shows_its_own_dialect(gateway_url: str) -> None:
    start_of_next("minute")
    customer = funded_customer(50)
    client = anthropic_client(gateway_url, customer.raw_key)
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    message = raw.parse()
    assert message.content[0].text == "Hello from the stub."  # type: ignore[union-attr]
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "20"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "19"
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert raw.headers["X-RateLimit-Remaining"] == "19"
    assert raw.headers["X-Credits-Remaining"] == "49"
    assert "x-ratelimit-limit-requests" not in raw.headers
    record = UsageRecord.objects.get()
    assert (record.prompt_tokens, record.completion_tokens, record.charged) == (12, 5, 1)


def test_a_bad_key_is_the_sdks_authentication_error(gateway_url: str) -> None:
    customer = funded_customer(50)
    with pytest.raises(openai.AuthenticationError) as openai_error:
        openai_client(gateway_url, customer.raw_key + "x").chat.completions.create(
            model=MODEL, messages=MESSAGES
        )
    assert openai_error.value.status_code == 401
    assert openai_error.value.code == "invalid_api_key"
    assert openai_error.value.type == "invalid_request_error"
    assert "x-ratelimit-limit-requests" not in openai_error.value.response.headers

    with pytest.raises(anthropic.AuthenticationError) as anthropic_error:
        anthropic_client(gateway_url, "sk-kimi-wrong").messages.create(
            model=MODEL, max_tokens=64, messages=MESSAGES
        )
    assert anthropic_error.value.status_code == 401
    assert anthropic_error.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key"},
    }
    assert charges_of(customer.user.pk) == 0


def test_no_credit_and_a_frozen_account_are_the_sdks_permission_denied_error(
    gateway_url: str,
) -> None:
    broke = funded_customer(0)
    with pytest.raises(openai.PermissionDeniedError) as openai_error:
        openai_client(gateway_url, broke.raw_key).chat.completions.create(
            model=MODEL, messages=MESSAGES
        )
    assert openai_error.value.code == "insufficient_credits"
    assert openai_error.value.type == "insufficient_quota"
    assert openai_error.value.response.headers["X-Credits-Remaining"] == "0"

    frozen = funded_customer(500)
    services.account_freeze(user_id=frozen.user.pk, reason="dispute")
    with pytest.raises(openai.PermissionDeniedError) as frozen_error:
        openai_client(gateway_url, frozen.raw_key).chat.completions.create(
            model=MODEL, messages=MESSAGES
        )
    assert frozen_error.value.code == "account_frozen"
    with pytest.raises(anthropic.PermissionDeniedError) as anthropic_error:
        anthropic_client(gateway_url, frozen.raw_key).messages.create(
            model=MODEL, max_tokens=64, messages=MESSAGES
        )
    assert anthropic_error.value.status_code == 403
    assert isinstance(anthropic_error.value.body, dict)
    assert anthropic_error.value.body["error"]["type"] == "permission_error"
    assert anthropic_error.value.response.headers["anthropic-ratelimit-requests-limit"] == "60"
    assert charges_of(frozen.user.pk) == 0


def test_the_21st_request_in_a_minute_is_the_sdks_rate_limit_error(gateway_url: str) -> None:
    start_of_next("minute")
    customer = funded_customer(100)
    client = openai_client(gateway_url, customer.raw_key)
    for _ in range(10):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    messages = anthropic_client(gateway_url, customer.raw_key).messages
    for _ in range(10):
        messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)

    with pytest.raises(openai.RateLimitError) as openai_error:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert openai_error.value.code == "rate_limit_exceeded"
    assert openai_error.value.body == {
        "message": RATE_LIMITED_20_PER_MINUTE,
        "type": "rate_limit_error",
        "code": "rate_limit_exceeded",
    }
    headers = openai_error.value.response.headers
    assert int(headers["Retry-After"]) >= 1
    assert headers["x-ratelimit-remaining-requests"] == "0"

    with pytest.raises(anthropic.RateLimitError) as anthropic_error:
        messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert anthropic_error.value.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": RATE_LIMITED_20_PER_MINUTE,
        },
    }
    assert anthropic_error.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    # 20 successes, 20 credits: denials are never charged.
    assert charges_of(customer.user.pk) == 20
    assert CreditAccount.objects.get(pk=customer.user.pk).balance == 80


def test_credits_charged_match_the_successes_and_upstream_failures_are_free(
    gateway_url: str,
) -> None:
    start_of_next("minute")
    customer = funded_customer(30)
    client = openai_client(gateway_url, customer.raw_key)
    successes = 0
    for n in range(12):
        if n % 3 == 0:
            with pytest.raises(openai.APIStatusError) as failed:
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "please fail"}]
                )
            assert failed.value.status_code == 502
        else:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
            successes += 1
    assert charges_of(customer.user.pk) == successes == 8
    assert UsageRecord.objects.filter(outcome="failure", reason="upstream_error").count() == 4
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert (account.balance, account.reserved, account.consumed) == (22, 0, 8)
    assert reconcile() == []
