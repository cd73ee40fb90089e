"""Health of the service, for load balancers and orchestrators.

- `GET /livez` (liveness): the process answers. No dependency is checked: restarting a web
  process because PostgreSQL or Redis is away would not bring them back.
- `GET /readyz` (readiness, what load balancers should probe): 503 only for what really stops
  service, the database. Redis is used for rate limits, throttles and the broker, and the
  service works without it (the limiter fails open, throttles count in-process, tasks wait in
  the database), so a Redis outage is reported as `degraded` with a 200: pulling every node out
  of the pool for it would turn a degradation into an outage.
- `GET /healthz`: as CONTRACT.md fixes it, 200 when the database and Redis (when configured)
  answer, 503 otherwise; the body says the same as `/readyz`'s.
- Celery workers and beat are reported from their heartbeats (config/heartbeat.py), as
  `degraded` on both.
"""

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from config.heartbeat import celery_status

logger = logging.getLogger(__name__)

# What a 503 is for: the database alone for readiness; the contract's /healthz adds Redis.
READY_ESSENTIAL = ("database",)
HEALTH_ESSENTIAL = ("database", "redis")


def check_health() -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:
        logger.exception("health check: database unreachable")
        checks["database"] = "unreachable"
    if settings.REDIS_URL:
        try:
            from config.redis import get_redis

            get_redis().ping()
            checks["redis"] = "ok"
        except Exception:
            logger.warning("health check: redis unreachable", exc_info=True)
            checks["redis"] = "unreachable"
    checks.update(celery_status())
    return checks


def _answer(essential: tuple[str, ...]) -> JsonResponse:
    """200 `ok` when everything answers, 200 `degraded` when only what is not `essential` is
    away, 503 `unavailable` otherwise; the body names each check."""
    checks = check_health()
    if any(checks.get(name, "ok") != "ok" for name in essential):
        status, code = "unavailable", 503
    elif any(value != "ok" for value in checks.values()):
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    return JsonResponse({"status": status, "checks": checks}, status=code)


def healthz(request: HttpRequest) -> JsonResponse:
    return _answer(HEALTH_ESSENTIAL)


def readyz(request: HttpRequest) -> JsonResponse:
    return _answer(READY_ESSENTIAL)


def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
