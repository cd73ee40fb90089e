from django.http import HttpRequest, JsonResponse

from config.health import check_health


def healthz(request: HttpRequest) -> JsonResponse:
    checks = check_health()
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )
