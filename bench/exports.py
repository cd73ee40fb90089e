"""Benchmark of the CSV exports (issue 20): `GET /api/user/requests.csv` streams in constant
memory whatever the range.

Seeds one user with 10,000, then 1,000,000 settled requests (bulk SQL, the statement of
bench/usage.py), then downloads each user's `requests.csv` through the full Django stack (test
client, knox token) reading the streamed body chunk by chunk, as a client would, and prints the
rows, bytes, time, and the process's peak RSS before and after each download. The peak RSS after
the 10,000-row export and after the 1,000,000-row one should be about the same: the rows come
from a server-side cursor 2,000 at a time and each CSV line is yielded as it is written.

Needs PostgreSQL. Runs in its own throwaway database (`<DATABASE_URL's name>_exports_bench`):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/billing_exports \\
        .venv/bin/python bench/exports.py [--sizes 10000,1000000]
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

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
from bench.usage import SEED_RECORDS  # noqa: E402
from credits import clock  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def subject(n: int) -> str:
    with transaction.atomic():
        user = User.objects.create_user(f"export-{n}@example.com", "bench-password-1")
        user_registered.send(sender=User, user=user, invite_code="")
    key_a, _ = api_key_create(user=user, name="a")
    key_b, _ = api_key_create(user=user, name="b")
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        params: dict[str, Any] = {
            "account": user.pk,
            "key_a": str(key_a.pk),
            "key_b": str(key_b.pk),
            "now": clock.now(),
            "n": n,
        }
        cursor.execute(SEED_RECORDS, params)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE credits_usagerecord")
    print(f"  seeded {n:>9,} requests in {time.perf_counter() - started:.1f} s")
    return AuthToken.objects.create(user)[1]


def download(client: Client, token: str, n: int) -> None:
    before = peak_rss_mb()
    started = time.perf_counter()
    response = client.get("/api/user/requests.csv", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200 and response.streaming
    size = lines = 0
    for chunk in response.streaming_content:  # type: ignore[attr-defined]
        size += len(chunk)
        lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    assert lines == n + 1, (lines, n)  # the header and every request
    print(
        f"  requests.csv of {n:>9,} rows: {size / 1e6:7.1f} MB in {elapsed:6.1f} s "
        f"({n / elapsed:,.0f} rows/s); peak RSS {before:.0f} MB before, "
        f"{peak_rss_mb():.0f} MB after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if connection.vendor != "postgresql":
        sys.exit("bench/exports.py needs PostgreSQL: set DATABASE_URL=postgres://...")
    setup_test_environment()
    base = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{base}_exports_bench"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        tokens = [subject(n) for n in sizes]
        client = Client()
        for n, token in zip(sizes, tokens, strict=True):
            download(client, token, n)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
