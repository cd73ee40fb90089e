"""Settings for the test suite: real PostgreSQL and Redis on their default local addresses.

Each variable can still be overridden from the environment (a second checkout can use its own
database name). Celery runs eagerly here; the tests that need a real worker start one.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

from .settings import *  # noqa: F403
from .settings import DATABASES, LEDGER_TRUNCATE_GUC

CELERY_TASK_ALWAYS_EAGER = True
# The admin tests log staff in with `force_login`, which no OTP device verifies: the suite runs
# without the second factor, and tests/admin/test_two_factor.py switches it on to test it.
ADMIN_REQUIRE_2FA = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Django's test flush TRUNCATEs every table between transactional tests; the ledger's
    # append-only trigger lets TRUNCATE through only for sessions that set this variable.
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f"{_options.get('options', '')} -c {LEDGER_TRUNCATE_GUC}=on".strip()
    DATABASES["default"]["CONN_MAX_AGE"] = 0
