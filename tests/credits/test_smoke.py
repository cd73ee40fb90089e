import pytest

from credits import services
from credits.models import CreditAccount
from credits.reconciliation import reconcile
from tests.factories import registered_user

pytestmark = pytest.mark.django_db


def test_registered_user_holds_the_signup_grant_and_can_spend_it() -> None:
    user = registered_user()
    account = CreditAccount.objects.get(pk=user.pk)
    assert (account.balance, account.reserved) == (100, 0)
    services.hold_create(user_id=user.pk, request_id="r1")
    result = services.hold_commit(request_id="r1")
    assert (result.charged, result.available) == (1, 99)
    assert reconcile() == []
