import pytest
from django.db import connection
from django.test import Client

from tests.factories import registered_user

pytestmark = pytest.mark.django_db


def test_a_user_endpoint_answers_503_in_our_error_shape_when_the_database_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = registered_user()
    client = Client()
    client.force_login(user)

    def unreachable(*args: object, **kwargs: object) -> None:
        from django.db import OperationalError

        raise OperationalError("connection to server failed")

    # The next query fails the way a lost PostgreSQL connection does.
    monkeypatch.setattr(connection, "ensure_connection", unreachable)
    response = client.get("/api/user/keys")

    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "code": "unavailable",
            "message": "The service is temporarily unavailable; retry shortly.",
        }
    }
