"""Settings, read from the environment (see the table in README.md and CONTRACT.md).

The embedded default needs nothing: SQLite in the project folder, an in-process rate limiter,
local-memory caches and Celery tasks run eagerly. Each of `DATABASE_URL`, `REDIS_URL` and
`CELERY_BROKER_URL` switches one piece to its production form.
"""

import os
import re
import sys
from pathlib import Path

import dj_database_url
import dj_email_url
from corsheaders.defaults import default_headers as cors_default_headers
from django.core.exceptions import ImproperlyConfigured

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
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = SECURE_SSL_REDIRECT
CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT
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
    "referrals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.observability.RequestIdMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",  # before CommonMiddleware, as its docs require
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
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
        "DIRS": [],
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
            conn_max_age=600,
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
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 0
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
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "billing",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "") or REDIS_URL
# Without a broker the embedded default runs tasks in-process, right after the caller commits.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task gets it redelivered: tasks are idempotent
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "credits-sweep": {"task": "credits.tasks.sweep_expired", "schedule": 60.0},
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
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
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

REST_KNOX = {
    "TOKEN_TTL": None,
    "AUTO_REFRESH": False,
    "AUTH_HEADER_PREFIX": "Token",
}

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
MAX_KEYS_PER_USER = env_int("MAX_KEYS_PER_USER", 25)
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
# The ledger's append-only trigger refuses TRUNCATE unless the session sets this PostgreSQL
# variable; only the test settings do, so Django's test flush can reset the database.
LEDGER_TRUNCATE_GUC = "billing.allow_ledger_truncate"

# --- i18n, static files, logging ------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

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

# key=value lines with the request id on each (config/observability.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.observability.RequestIdFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s level=%(levelname)s logger=%(name)s "
            "request_id=%(request_id)s %(message)s"
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
