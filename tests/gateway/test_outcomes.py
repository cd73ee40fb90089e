"""One outcome vocabulary (`credits.gateway.outcomes.Outcome`) for the views, both backends and
the SQL functions; an answer outside it is a logic error (500, counted `error`), never reported
or counted as an unreachable database."""

import re

import pytest
from django.db import connection

from config.observability import SETTLES
from credits.gateway.outcomes import Outcome
from credits.gateway.sql_functions import sql_function_texts
from tests.gateway.conftest import Gateway, funded_customer

# An outcome a function answers: `outcome := 'x'` or the first column of `SELECT 'x'::text`.
ANSWERED = re.compile(r"outcome := '(\w+)'|RETURN QUERY SELECT '(\w+)'::text")


def test_every_outcome_the_sql_functions_answer_is_in_the_vocabulary() -> None:
    answered = {
        first or second
        for text in sql_function_texts().values()
        for first, second in ANSWERED.findall(text)
    }
    assert answered  # the pattern still finds them
    assert answered <= {outcome.value for outcome in Outcome}


def _settles(label: str) -> float:
    return SETTLES.labels(label)._value.get()


@pytest.mark.django_db
def test_an_outcome_outside_the_vocabulary_is_a_500_counted_as_an_error_not_as_unavailable(
    gateway: Gateway,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the SQL functions exist on PostgreSQL only")
    customer = funded_customer(3)
    request_id = "req_logic_error"
    assert gateway.authorize(customer.raw_key, request_id)["allowed"] is True
    # A real function with a logic error (rolled back with the test's transaction).
    text = sql_function_texts()["gateway_settle"]
    with connection.cursor() as cursor:
        cursor.execute(
            text.replace("outcome := 'ok';", "outcome := 'surprise';"),
        )
    errors, unavailable = _settles("error"), _settles("unavailable")
    response = gateway.settle(request_id)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert (_settles("error"), _settles("unavailable")) == (errors + 1, unavailable)
