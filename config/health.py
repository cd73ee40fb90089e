"""Liveness of what the service depends on, for load balancers (`GET /healthz`)."""

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)


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
            logger.exception("health check: redis unreachable")
            checks["redis"] = "unreachable"
    return checks


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every dependency answers, 503 otherwise; the body says which one failed."""
    checks = check_health()
    ok = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )
