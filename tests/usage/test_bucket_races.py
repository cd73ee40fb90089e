"""Concurrent settles into one bucket, on real PostgreSQL: each thread inserts its usage record in
its own transaction on its own connection, all released at once, into an hour that has no bucket
yet (so they race to create it). ON CONFLICT DO UPDATE must turn every loser's INSERT into an
increment: one bucket, every request counted once."""

from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction

from credits.gateway.models import UsageBucket
from tests import concurrency
from tests.factories import registered_user

from .conftest import new_key, record, utc

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

THREADS = 20  # each holds a connection (tests/concurrency.py checks they are free)


def run_together(jobs: list[Callable[[], Any]]) -> list[BaseException]:
    """The jobs in as many threads released at once; the exceptions they raised."""
    results = concurrency.run_together(len(jobs), lambda i: jobs[i]())
    return [result for result in results if isinstance(result, BaseException)]


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "keyless"])
def test_concurrent_records_of_one_hour_make_one_bucket_counting_each_once(keyed: bool) -> None:
    user = registered_user()
    key = new_key(user)[0] if keyed else None

    def settle_one(n: int) -> Callable[[], None]:
        def job() -> None:
            with transaction.atomic():
                record(
                    user,
                    key,
                    f"race-{n}",
                    at=utc(f"2026-11-25T10:{n % 60:02d}:00"),
                    charged=int(n % 4 != 0),  # every fourth a failure
                    prompt_tokens=n,
                    completion_tokens=1,
                )

        return job

    errors = run_together([settle_one(n) for n in range(THREADS)])
    assert errors == []
    buckets = list(UsageBucket.objects.filter(account_id=user.pk))
    assert len(buckets) == 1
    charged = [n for n in range(THREADS) if n % 4 != 0]
    bucket = buckets[0]
    assert (bucket.requests, bucket.credits) == (THREADS, len(charged))
    assert (bucket.prompt_tokens, bucket.completion_tokens) == (sum(charged), len(charged))
