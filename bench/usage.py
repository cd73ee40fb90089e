"""Benchmark of `GET /api/user/credits` as usage grows (issue 7).

Seeds one user with 1,000, then 100,000, then 1,000,000 settled requests spread evenly over the
last 90 days (2 API keys, 2 models, 1 in 10 a failure), and times `GET /api/user/credits` through
the full Django stack (middleware, knox token auth, DRF, JSON) with the test client. Prints the
p50 (and p95) per size and the growth ratio; the targets are p50 < 30 ms and < 2x growth from the
smallest to the largest size.

It then measures what the bucket trigger adds to the settle's single-row INSERT of a usage
record: the same insert, each in its own transaction, with the trigger enabled and disabled.

Seeding is bulk SQL, not the API: the records with one INSERT ... SELECT generate_series (the
trigger disabled meanwhile) and their buckets with one INSERT ... SELECT ... GROUP BY, which is
exactly what the trigger would have written row by row (checked after each seed). The account's
`consumed` cache is set to the charged count so the response looks like the real thing; the
ledger itself is not seeded with a million charges (the endpoint never reads entries).

Needs PostgreSQL. Runs in its own throwaway database (`<DATABASE_URL's name>_usage_bench`):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/billing_usage \\
        .venv/bin/python bench/usage.py [--sizes 1000,100000,1000000] [--runs 200]
"""

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Production settings (persistent database connections, as under gunicorn), not the test ones.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from knox.models import AuthToken  # noqa: E402

from accounts.models import User  # noqa: E402
from accounts.services import api_key_create  # noqa: E402
from accounts.signals import user_registered  # noqa: E402
from credits import clock, services  # noqa: E402
from credits.gateway.models import UsageBucket, UsageRecord  # noqa: E402
from credits.models import CreditAccount, LotSource  # noqa: E402

DAYS = 90
MODELS = ("kimi-k2-0905", "kimi-k2-turbo-preview")
TRIGGER = "credits_usagerecord_bucket"

SEED_RECORDS = f"""
INSERT INTO credits_usagerecord (request_id, account_id, api_key_id, model, prompt_tokens,
                                 completion_tokens, outcome, reason, http_status, charged,
                                 settled_at)
SELECT 'bench-' || %(n)s || '-' || i,
       %(account)s,
       CASE WHEN i %% 2 = 0 THEN %(key_a)s::uuid ELSE %(key_b)s::uuid END,
       CASE WHEN (i / 2) %% 2 = 0 THEN '{MODELS[0]}' ELSE '{MODELS[1]}' END,
       20 + i %% 50,
       100 + i %% 300,
       CASE WHEN i %% 10 = 0 THEN 'failure' ELSE 'success' END,
       CASE WHEN i %% 10 = 0 THEN 'upstream_error' ELSE '' END,
       CASE WHEN i %% 10 = 0 THEN 502 ELSE 200 END,
       CASE WHEN i %% 10 = 0 THEN 0 ELSE 1 END,
       %(now)s - (i - 1) * (interval '{DAYS} days' / %(n)s)
  FROM generate_series(1, %(n)s) AS i
"""

# What the trigger writes, row by row, done for one account's records in one statement.
SEED_BUCKETS = """
INSERT INTO credits_usagebucket (account_id, api_key_id, model, hour, requests, credits,
                                 prompt_tokens, completion_tokens)
SELECT account_id, api_key_id, model, date_trunc('hour', settled_at, 'UTC'), count(*),
       sum(charged), sum(CASE WHEN charged > 0 THEN prompt_tokens ELSE 0 END),
       sum(CASE WHEN charged > 0 THEN completion_tokens ELSE 0 END)
  FROM credits_usagerecord
 WHERE account_id = %(account)s
 GROUP BY 1, 2, 3, 4
"""


@dataclass
class Subject:
    """One user with `n` settled requests, and the credentials to ask for their report."""

    n: int
    user: User
    token: str
    raw_key: str
    key_id: str
    samples: dict[str, list[float]] = field(default_factory=dict)


def subject_create(n: int) -> Subject:
    with transaction.atomic():
        user = User.objects.create_user(f"bench-{n}@example.com", "bench-password-1")
        user_registered.send(sender=User, user=user, invite_code="")
    services.credits_grant(
        user_id=user.pk,
        amount=5_000,
        source=LotSource.PURCHASE,
        package="standard",
        expires_at=clock.now() + timedelta(days=30),
        idempotency_key=f"bench:standard:{n}",
    )
    key_a, raw = api_key_create(user=user, name="a")
    key_b, _ = api_key_create(user=user, name="b")
    _, token = AuthToken.objects.create(user)
    seed(n, user=user, key_a=str(key_a.pk), key_b=str(key_b.pk))
    return Subject(n, user, token, raw, str(key_a.pk))


def seed(n: int, *, user: User, key_a: str, key_b: str) -> None:
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        # Foreign keys are checked per statement, so no trigger event is pending at the ALTER.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE credits_usagerecord DISABLE TRIGGER {TRIGGER}")
        params = {"account": user.pk, "key_a": key_a, "key_b": key_b, "now": clock.now(), "n": n}
        cursor.execute(SEED_RECORDS, params)
        cursor.execute(SEED_BUCKETS, params)
        cursor.execute(f"ALTER TABLE credits_usagerecord ENABLE TRIGGER {TRIGGER}")
        charged = UsageRecord.objects.filter(account_id=user.pk, charged=1).count()
        CreditAccount.objects.filter(pk=user.pk).update(consumed=charged)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE credits_usagerecord")
        cursor.execute("ANALYZE credits_usagebucket")
    buckets = UsageBucket.objects.filter(account_id=user.pk)
    total = sum(buckets.values_list("requests", flat=True))
    assert total == n, (total, n)
    print(
        f"  seeded {n:>9,} requests -> {buckets.count():,} hourly buckets "
        f"in {time.perf_counter() - started:.1f} s"
    )


def timed_get(client: Client, path: str, **headers: str) -> float:
    start = time.perf_counter()
    response = client.get(path, **headers)  # type: ignore[arg-type]
    elapsed = (time.perf_counter() - start) * 1000
    assert response.status_code == 200, response.content
    return elapsed


def explain_usage_queries(user: User) -> str:
    """Server-side execution time of the two usage queries of a default report (EXPLAIN
    ANALYZE): the database's share, free of the client's Python and of a busy machine's noise."""
    from credits.usage.selectors import daily_query, default_windows, hourly_query

    days, hours = default_windows(clock.now())
    times = []
    for query_of, window in ((daily_query, days), (hourly_query, hours)):
        sql, params = query_of(account_id=user.pk, window=window).query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
            times.append(cursor.fetchone()[0][0]["Execution Time"])
    return f"db: days {times[0]:.2f} ms, hours {times[1]:.2f} ms"


def trigger_cost(*, user: User, key_id: str, rounds: int = 10, per_round: int = 200) -> None:
    """Per-insert latency of the settle's usage INSERT (own transaction each), trigger on/off,
    alternating rounds so that drift hits both alike."""
    on: list[float] = []
    off: list[float] = []
    serial = 0
    for r in range(rounds * 2):
        enabled = r % 2 == 0
        with connection.cursor() as cursor:
            state = "ENABLE" if enabled else "DISABLE"
            cursor.execute(f"ALTER TABLE credits_usagerecord {state} TRIGGER {TRIGGER}")
        for _ in range(per_round):
            serial += 1
            start = time.perf_counter()
            with transaction.atomic():
                UsageRecord.objects.create(
                    request_id=f"trigger-bench-{serial}",
                    account_id=user.pk,
                    api_key_id=key_id,
                    model=MODELS[0],
                    prompt_tokens=25,
                    completion_tokens=189,
                    outcome="success",
                    reason="",
                    http_status=200,
                    charged=1,
                    settled_at=clock.now(),
                )
            (on if enabled else off).append((time.perf_counter() - start) * 1000)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE credits_usagerecord ENABLE TRIGGER {TRIGGER}")
    p_on, p_off = statistics.median(on), statistics.median(off)
    print(
        f"trigger cost: usage INSERT + COMMIT p50 {p_off:.3f} ms without the trigger, "
        f"{p_on:.3f} ms with it: +{(p_on - p_off) * 1000:.0f} us per settled request "
        f"({len(on)} inserts each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    if connection.vendor != "postgresql":
        sys.exit("bench/usage.py needs PostgreSQL: set DATABASE_URL=postgres://...")
    setup_test_environment()
    base = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{base}_usage_bench"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        subjects = [subject_create(n) for n in sizes]
        since = (clock.now() - timedelta(days=DAYS)).date().isoformat()
        calls = {
            "token": ("/api/user/credits", lambda s: {"HTTP_AUTHORIZATION": f"Token {s.token}"}),
            "api key": ("/api/user/credits", lambda s: {"HTTP_X_API_KEY": s.raw_key}),
            "90 days by hour": (
                f"/api/user/credits?from={since}",
                lambda s: {"HTTP_AUTHORIZATION": f"Token {s.token}"},
            ),
        }
        client = Client()
        # Round robin: each round asks every size once, so that whatever else the machine is
        # doing (other test runs) weighs on all sizes alike and the ratio stays meaningful.
        for warm_up in (True, False):
            for _ in range(20 if warm_up else args.runs):
                for subject in subjects:
                    for name, (path, headers) in calls.items():
                        elapsed = timed_get(client, path, **headers(subject))
                        if not warm_up:
                            subject.samples.setdefault(name, []).append(elapsed)

        print(
            f"GET /api/user/credits: {args.runs} timed calls per size and credential, "
            f"interleaved (load average {os.getloadavg()[0]:.1f})"
        )
        for subject in subjects:
            token = sorted(subject.samples["token"])
            others = "; ".join(
                f"{name} p50 {statistics.median(subject.samples[name]):.2f} ms"
                for name in ("api key", "90 days by hour")
            )
            print(
                f"  {subject.n:>9,} requests: p50 {statistics.median(token):6.2f} ms  "
                f"p95 {token[int(len(token) * 0.95) - 1]:6.2f} ms   ({others}; "
                f"{explain_usage_queries(subject.user)})"
            )
        smallest = statistics.median(subjects[0].samples["token"])
        largest = statistics.median(subjects[-1].samples["token"])
        ratio = largest / smallest
        verdict = "OK" if largest < 30 and ratio < 2 else "MISSED"
        print(
            f"growth {sizes[0]:,} -> {sizes[-1]:,}: {ratio:.2f}x; largest p50 {largest:.2f} ms "
            f"(targets: < 30 ms, < 2x): {verdict}"
        )
        trigger_cost(user=subjects[-1].user, key_id=subjects[-1].key_id)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
