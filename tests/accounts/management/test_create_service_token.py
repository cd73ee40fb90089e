from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts import secrets
from accounts.models import ServiceToken
from accounts.service_tokens import service_token_verify

pytestmark = pytest.mark.django_db


def test_the_command_prints_a_working_token_once_and_stores_only_its_digest() -> None:
    out, err = StringIO(), StringIO()
    call_command("create_service_token", "gateway-eu-1", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    assert raw.startswith("svc-") and "\n" not in raw
    assert raw not in err.getvalue()
    token = ServiceToken.objects.get(name="gateway-eu-1")
    assert token.digest == secrets.digest(raw)
    assert raw not in (token.prefix, token.name)
    assert service_token_verify(raw) == token.pk


def test_a_taken_name_is_refused() -> None:
    call_command("create_service_token", "gateway", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="exists already"):
        call_command("create_service_token", "gateway", stdout=StringIO(), stderr=StringIO())
    assert ServiceToken.objects.count() == 1
