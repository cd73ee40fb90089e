"""Settings, read from the environment (see the table in README.md and CONTRACT.md).

The embedded default needs nothing: SQLite in the project folder, an in-process rate limiter,
local-memory caches and Celery tasks run eagerly. Each of `DATABASE_URL`, `REDIS_URL` and
`CELERY_BROKER_URL` switches one piece to its production form.
"""

import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
import dj_email_url
from celery.schedules import crontab
from corsheaders.defaults import default_headers as cors_default_headers
from django.core.exceptions import ImproperlyConfigured
from pythonjsonlogger.core import RESERVED_ATTRS as JSON_LOG_RESERVED_ATTRS

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


DEBUG = env_bool("DEBUG")
# Staff log in to the admin with a second factor (config/admin_site.py); on unless DEBUG.
ADMIN_REQUIRE_2FA = env_bool("ADMIN_REQUIRE_2FA", default=not DEBUG)
OTP_TOTP_ISSUER = os.environ.get("OTP_TOTP_ISSUER", "Kimi billing admin")
# Every admin page read (GET) stops any statement that runs longer than this (PostgreSQL's
# `statement_timeout`, for that request's transaction only) and answers a clear 503 page
# instead (config/admin_site.py): a page that would scan a large table cannot hold a connection
# and a core for the global DB_STATEMENT_TIMEOUT_MS. 0 turns it off.
ADMIN_STATEMENT_TIMEOUT_MS = env_int("ADMIN_STATEMENT_TIMEOUT_MS", 3_000)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        sys.exit(
            "SECRET_KEY is not set. Set SECRET_KEY (a long random string) to run with DEBUG off, "
            "or set DEBUG=1 for local development."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or (["*"] if DEBUG else ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# The dashboard front end, served from another origin, calls the user API from the browser:
# django-cors-headers answers its preflights and names the origin on the answers, for the user
# API only (the admin is same-origin; the internal API is called by the gateway, not browsers).
# Credentials are allowed because the contract lets the dashboard use the session cookie; a
# session-authenticated write still needs its CSRF token (CSRF_TRUSTED_ORIGINS).
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS")
CORS_ALLOW_CREDENTIALS = True
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = (*cors_default_headers, "idempotency-key", "x-request-id")
CORS_EXPOSE_HEADERS = ["Retry-After", "X-Credits-Remaining", "X-Request-ID"]
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT")
# "Behind TLS" is what the load balancer says per request (X-Forwarded-Proto: https), not the
# redirect setting: on such requests cookies are Secure (config.security.SecureCookiesMiddleware)
# and HSTS is sent (SecurityMiddleware sends it on secure requests only).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = SECURE_SSL_REDIRECT
CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Bodies larger than this are refused with a 4xx before any view runs.
DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024

INSTALLED_APPS = [
    "config.admin_apps.BillingAdminConfig",  # django.contrib.admin, with 2FA (config/admin_site.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",  # staff's authenticator apps
    "django_otp.plugins.otp_static",  # staff's single-use recovery codes
    "auditlog",  # the append-only audit log of staff writes (config/audit.py)
    "accounts",
    "credits",
    "credits.gateway",
    "credits.payments",
    "credits.usage",
    "credits.notifications",
    "credits.console",
    "referrals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.security.SecureCookiesMiddleware",  # above sessions and CSRF: sees their cookies
    "config.observability.RequestIdMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",  # before CommonMiddleware, as its docs require
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.login_sessions.LoginSessionMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified() for the admin's 2FA
    "config.audit.AdminAuditActorMiddleware",  # the audit log's actor: the admin's user
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
AUTH_USER_MODEL = "accounts.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The admin's base_site.html (its layout rules), found before the admin's own.
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            # A connection kept between requests is checked (one `SELECT 1`) before a request's
            # first query through Django's cursor, so a database restart costs no request a 500.
            # The hot path's own cursor (credits/gateway/backends.py `_call`) skips the check:
            # a lost connection there is a quick 503 and is replaced on the next call.
            DATABASE_URL,
            # One connection per server thread, kept between requests: the threads are bounded
            # (config/serve.py), so the connections are (README, "Sizing").
            conn_max_age=env_int("DB_CONN_MAX_AGE", 600),
            conn_health_checks=True,
        )
    }
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # Server-side prepared statements for the gateway's SQL function calls, from their
        # first use on a connection (credits/gateway/backends.py `_call`, psycopg's own cursor):
        # without them PostgreSQL parses and plans `SELECT * FROM gateway_...(...)` on every
        # call, measured at 3 to 4% of the machine's CPU under load. The ORM is unaffected: its
        # cursors bind client-side and never prepare (Django turns preparing off by default for
        # poolers; behind PgBouncer in transaction mode, set its max_prepared_statements).
        #
        # `DATABASE_PREPARED_STATEMENTS=0` turns them off (`prepare_threshold: None`): behind
        # PgBouncer in transaction mode before 1.21 (Debian 12 has 1.18), consecutive
        # transactions of one client may run on different server connections, and a statement
        # prepared on one is missing on the next ("prepared statement _pg3_0 does not exist"),
        # or a name is already taken by another client's ("already exists").
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
            0 if env_bool("DATABASE_PREPARED_STATEMENTS", True) else None
        )
        # Bounds on every session, so that no request, lock wait or forgotten transaction can
        # hold a connection (and the rows it locked) for long: under a burst, waits pile up
        # behind locks, and connections are the scarce resource (README, "Sizing").
        # `reconcile_ledger` lifts the statement bound for its own snapshot. 0 turns one off.
        DATABASES["default"]["OPTIONS"]["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 5)
        _session_bounds = {
            "statement_timeout": env_int("DB_STATEMENT_TIMEOUT_MS", 30_000),
            "lock_timeout": env_int("DB_LOCK_TIMEOUT_MS", 5_000),
            "idle_in_transaction_session_timeout": env_int("DB_IDLE_IN_TRANSACTION_MS", 60_000),
        }
        # `DATABASE_STARTUP_OPTIONS=0` sends them not at all: PgBouncer 1.18 refuses a client
        # whose startup packet carries `options` ("unsupported startup parameter"), and in
        # transaction mode a session setting would not follow the client anyway. Behind it, set
        # the same bounds on the server connections (PgBouncer's `connect_query`, or
        # `ALTER ROLE ... SET`; README, "Behind PgBouncer").
        if env_bool("DATABASE_STARTUP_OPTIONS", True):
            DATABASES["default"]["OPTIONS"]["options"] = " ".join(
                [
                    DATABASES["default"]["OPTIONS"].get("options", ""),
                    *(f"-c {name}={value}" for name, value in _session_bounds.items()),
                ]
            ).strip()
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            # Writers wait for each other instead of failing with "database is locked".
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, caches, Celery ------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's RedisCache with short socket timeouts and the process's circuit
            # breaker (config/redis.py): a hung Redis must not hold a login for seconds.
            "BACKEND": "config.redis.BreakerRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "billing",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "") or REDIS_URL
# Without a broker the embedded default runs tasks in-process, right after the caller commits.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
if CELERY_TASK_ALWAYS_EAGER:
    # Nothing is ever sent; an empty URL made kombu warn "No hostname was supplied" on the
    # first task of every process.
    CELERY_BROKER_URL = "memory://localhost/"
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task gets it redelivered: tasks are idempotent
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Workers log through settings.LOGGING (one format, the request id field on every line) rather
# than replacing the root logger's handlers with Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
# Requests never publish in their own thread (config/broker.py); these bound how long the
# publisher thread and the workers wait on a broker that hangs.
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 5}
CELERY_BROKER_CONNECTION_TIMEOUT = 5
# Workers and beat write a heartbeat this often; /healthz calls one missing after three
# intervals (config/heartbeat.py).
HEARTBEAT_INTERVAL_SECONDS = float(os.environ.get("HEARTBEAT_INTERVAL_SECONDS") or 10)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "credits-sweep": {"task": "credits.tasks.sweep_expired", "schedule": 60.0},
    # `credits.expiring` and `key.expiring` (issue 17): at least every minute, like the sweep.
    "credits-notices": {"task": "credits.tasks.notices_sweep", "schedule": 60.0},
    "stripe-requeue-stale": {
        "task": "credits.payments.stripe_events_requeue_stale",
        "schedule": 300.0,
    },
    # Staff refunds whose after-commit send was lost (credits/payments/refunds.py).
    "staff-refunds-requeue": {
        "task": "credits.payments.staff_refunds_requeue_pending",
        "schedule": 300.0,
    },
    # Mail whose after-commit kick was lost (broker down) or whose send failed and is due again.
    "outbound-email-sweep": {"task": "accounts.tasks.outbound_email_sweep", "schedule": 60.0},
    # Events whose after-commit dispatch was lost (broker down, SQL-written) and webhook
    # retries that are due (credits/notifications).
    "notifications-sweep": {"task": "credits.notifications.sweep", "schedule": 10.0},
    "stripe-requeue-failed": {
        "task": "credits.payments.stripe_events_requeue_failed",
        "schedule": 3600.0,
    },
    # Auto top-up: accounts stamped by the ledger whose kick was lost, and charges whose task
    # was lost or met Stripe away (credits/payments/autotopup.py).
    "auto-topups-sweep": {"task": "credits.payments.auto_topups_sweep", "schedule": 10.0},
    # The closed hours' usage totals of the admin index (credits/usage/models.py).
    "usage-hours-roll-up": {"task": "credits.usage.usage_hours_roll_up", "schedule": 60.0},
    # Data growth (issue 23): the coming months' usage partitions and USAGE_RETENTION_DAYS
    # (credits/gateway/partitions.py), HOLD_RETENTION_DAYS (credits/retention.py).
    "usage-upkeep": {"task": "credits.gateway.usage_upkeep", "schedule": 3600.0},
    "holds-prune": {"task": "credits.tasks.holds_prune", "schedule": 3600.0},
    # Reconciliation (credits/reconciliation_incremental.py): the day's entries nightly, from the
    # per-account checkpoints (seconds); the whole ledger weekly, for what a checkpoint cannot
    # see (minutes, and its snapshot holds back VACUUM meanwhile: off-peak). Both UTC.
    "reconcile-incremental": {
        "task": "credits.tasks.reconcile_incremental",
        "schedule": crontab(hour=3, minute=15),
    },
    "reconcile-full": {
        "task": "credits.tasks.reconcile_full",
        "schedule": crontab(hour=4, minute=0, day_of_week="sun"),
    },
}

# --- Auth and API ---------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.login_tokens.LoginTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        # Last: a 401 that names what to send instead of a misdirected credential.
        "accounts.login_tokens.MisdirectedCredentialAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    # Scopes of accounts/throttles.py. `login` counts a client address and email together,
    # `login_client` a client address across every email (password spraying), `login_email`
    # one email from anywhere.
    "DEFAULT_THROTTLE_RATES": {
        "login": "10/min",
        "login_client": "20/min",
        "login_email": "30/min",
        "password_reset": "10/hour",
        "password_reset_email": "5/hour",
        "verify_resend": "5/hour",
        "email_change": "10/hour",
    },
}

# Login tokens (and browser sessions) last LOGIN_TTL_DAYS after their last use: each use moves
# the expiry on (knox's AUTO_REFRESH, at most one write a minute; the cookie's is moved by
# accounts.login_sessions.LoginSessionMiddleware the same way).
LOGIN_TTL_DAYS = env_int("LOGIN_TTL_DAYS", 30)
if LOGIN_TTL_DAYS < 1:
    raise ImproperlyConfigured(f"LOGIN_TTL_DAYS must be at least 1, got {LOGIN_TTL_DAYS}")
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=LOGIN_TTL_DAYS),
    "AUTO_REFRESH": True,
    "MIN_REFRESH_INTERVAL": 60,
    "AUTH_HEADER_PREFIX": "Token",
}
# knox's own token model, named so that accounts.LoginSession can point at it.
KNOX_TOKEN_MODEL = "knox.AuthToken"  # noqa: S105  (a model name, not a secret)
SESSION_COOKIE_AGE = LOGIN_TTL_DAYS * 24 * 3600

SPECTACULAR_SETTINGS = {
    "TITLE": "Kimi K2 billing service",
    "DESCRIPTION": "Credit ledger, API keys and gateway authorization for the Kimi K2 API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The internal API's plain Django views are invisible to the generator: documented here.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.internal_schema.add_internal_api",
    ],
}

# --- Product settings (CONTRACT.md, "Configuration") ----------------------------------------
HOLD_TTL_SECONDS = env_int("HOLD_TTL_SECONDS", 660)
# Retention (issue 23, README "Data growth"): settled holds and usage records older than this
# many days are deleted (usage: whole monthly partitions dropped on PostgreSQL). 0 = forever.
HOLD_RETENTION_DAYS = env_int("HOLD_RETENTION_DAYS", 0)
USAGE_RETENTION_DAYS = env_int("USAGE_RETENTION_DAYS", 0)
for _name in ("HOLD_RETENTION_DAYS", "USAGE_RETENTION_DAYS"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 (keep forever) or a number of days")
MAX_KEYS_PER_USER = env_int("MAX_KEYS_PER_USER", 25)
# Keys created per account in any rolling hour (revoked ones count): rate limits are per key, so
# revoke-and-recreate must not reset them (accounts/services.py). 0 = no limit.
KEY_CREATIONS_PER_HOUR = env_int("KEY_CREATIONS_PER_HOUR", 10)
API_KEY_PREFIX = os.environ.get("API_KEY_PREFIX") or "sk-kimi-"  # empty: the default
# Keys are recognised by shape (accounts/api_keys.py: a prefix of 1 to 24 characters before the
# secret) and the shown prefix is stored in 32 characters (the prefix plus 8): a prefix outside
# these bounds would make every new key a 500 or a 401, so the process refuses to start.
if not re.fullmatch(r"[\x21-\x7e]{1,24}", API_KEY_PREFIX):
    raise ImproperlyConfigured(
        "API_KEY_PREFIX must be 1 to 24 printable ASCII characters, no spaces; "
        f"got {API_KEY_PREFIX!r}"
    )
# --- Accounts for the public (CONTRACT.md part 2) ---------------------------------------------
EMAIL_VERIFICATION = os.environ.get("EMAIL_VERIFICATION", "required").strip().lower() or "required"
if EMAIL_VERIFICATION not in {"required", "off"}:
    raise ImproperlyConfigured(
        f"EMAIL_VERIFICATION must be 'required' or 'off', got {EMAIL_VERIFICATION!r}"
    )
SIGNUP_LIMIT_PER_IP_PER_HOUR = env_int("SIGNUP_LIMIT_PER_IP_PER_HOUR", 10)
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
if SIGNUP_LIMIT_PER_IP_PER_HOUR < 0 or TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("SIGNUP_LIMIT_PER_IP_PER_HOUR and TRUSTED_PROXY_COUNT must be >= 0")
# Reset links live an hour (Django's own password-reset views read the same setting).
PASSWORD_RESET_TIMEOUT = 3600

# --- Outbound email: the transport as one URL, parsed by dj-email-url ----------------------------
EMAIL_URL = os.environ.get("EMAIL_URL", "") or "console:"
_EMAIL = dj_email_url.parse(EMAIL_URL)
EMAIL_BACKEND = _EMAIL["EMAIL_BACKEND"]
EMAIL_HOST = _EMAIL["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _EMAIL["EMAIL_PORT"] or 25
EMAIL_HOST_USER = _EMAIL["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _EMAIL["EMAIL_HOST_PASSWORD"] or ""
EMAIL_USE_TLS = _EMAIL["EMAIL_USE_TLS"]
EMAIL_USE_SSL = _EMAIL["EMAIL_USE_SSL"]
EMAIL_FILE_PATH = _EMAIL["EMAIL_FILE_PATH"]
# An SMTP server that stops answering must not hold a Celery worker for ever.
EMAIL_TIMEOUT = _EMAIL["EMAIL_TIMEOUT"] or 10
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "") or "Kimi K2 <no-reply@localhost>"
SERVER_EMAIL = DEFAULT_FROM_EMAIL

DASHBOARD_URL = os.environ.get("DASHBOARD_URL", "http://localhost:8000").rstrip("/")
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "")
# Stripe's events can outgrow the site-wide 256 KB body bound (credits/payments/views.py).
STRIPE_WEBHOOK_MAX_BYTES = env_int("STRIPE_WEBHOOK_MAX_BYTES", 2 * 1024 * 1024)
# Webhooks (credits/notifications). The signing secrets are encrypted under a key derived from
# WEBHOOK_SECRETS_KEY, or SECRET_KEY when unset (changing it makes existing secrets unreadable).
WEBHOOK_SECRETS_KEY = os.environ.get("WEBHOOK_SECRETS_KEY", "")
# Development and tests only: also http:// and private, loopback, link-local... addresses.
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)
# The total time a receiver has to answer one delivery (connect, send, answer).
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS") or 10)
# The ledger's append-only trigger refuses TRUNCATE unless the session sets this PostgreSQL
# variable; only the test settings do, so Django's test flush can reset the database.
LEDGER_TRUNCATE_GUC = "billing.allow_ledger_truncate"

# --- i18n, static files, logging ------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# The admin's formats (config/formats/en): times as `2026-11-25 07:00:00 UTC`, numbers with
# thousands separators. The APIs are JSON and never localized.
FORMAT_MODULE_PATH = ["config.formats"]
USE_THOUSAND_SEPARATOR = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Hashed, compressed names need the manifest `collectstatic` writes (production runs it, see
# README). Before it has run (tests, a first start with DEBUG off) every `{% static %}` would
# raise, so plain names are used and WhiteNoise serves them from the apps' folders.
_STATIC_COLLECTED = (STATIC_ROOT / "staticfiles.json").exists() or "collectstatic" in sys.argv
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if _STATIC_COLLECTED and not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Serve static files from the finders when collectstatic has not run (tests, first start).
WHITENOISE_USE_FINDERS = True
WHITENOISE_MANIFEST_STRICT = False

# One line per record on stderr, with the request id on each (config/observability.py):
# `key=value` text by default, or one JSON object per line (`LOG_FORMAT=json`, through
# python-json-logger) for log collectors. Django's own loggers go through the same handler
# (their default console handler would print a second, id-less copy of each 4xx line), and so
# does runserver's access log, less its 4xx lines (django.request already wrote one).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "").strip().lower() or "plain"
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', got {LOG_FORMAT!r}")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "config.observability.RequestIdFilter"},
        "one_line_per_4xx": {"()": "config.observability.OneLinePer4xxFilter"},
    },
    "formatters": {
        "plain": {
            "format": "%(asctime)s level=%(levelname)s logger=%(name)s "
            "request_id=%(request_id)s %(message)s"
        },
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            # django.request's `request` (and runserver's socket) are objects, not fields.
            "reserved_attrs": [*JSON_LOG_RESERVED_ATTRS, "request", "server_time"],
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "one_line_per_4xx"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
    },
}

# Optional error reporting (config/error_reporting.py): credentials are scrubbed before
# anything leaves the process.
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
if SENTRY_DSN:
    from config.error_reporting import error_reporting_init

    error_reporting_init(
        dsn=SENTRY_DSN, environment=os.environ.get("SENTRY_ENVIRONMENT", "production")
    )
