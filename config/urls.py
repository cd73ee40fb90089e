"""URL map. Each app mounts its own `urls.py` here with one line:

- the user API under `/api/` (add `path("", include("APP.urls"))` to `api_patterns`);
- the gateway's internal API under `/internal/v1/` (add to `internal_patterns`).
"""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.renderers import OpenApiJsonRenderer2
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from config.health import healthz, livez, readyz
from config.observability import metrics_view

handler400 = "config.errors.json_400"
handler403 = "config.errors.json_403"
handler404 = "config.errors.json_404"
handler500 = "config.errors.json_500"

# The user API (dashboard, and `GET /api/user/credits` with an API key).
api_patterns: list[URLPattern | URLResolver] = [
    path("", include("accounts.urls")),
    path("", include("credits.payments.urls")),
    path("", include("referrals.urls")),
    path("", include("credits.usage.urls")),
    path("", include("credits.notifications.urls")),
    # `application/json` whatever the Accept header (spectacular's first choice is the
    # vendor type `application/vnd.oai.openapi+json`, which some clients do not parse).
    path(
        "schema/",
        SpectacularJSONAPIView.as_view(renderer_classes=[OpenApiJsonRenderer2]),
        name="schema",
    ),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

# The gateway's internal API, guarded by service tokens (accounts.authentication).
internal_patterns: list[URLPattern | URLResolver] = [
    path("", include("credits.gateway.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("livez", livez, name="livez"),
    path("metrics", metrics_view, name="metrics"),
    path("api/", include(api_patterns)),
    path("internal/v1/", include(internal_patterns)),
    # The customer's console and the pages behind the links the service sends (DASHBOARD_URL).
    path("", include("credits.console.urls")),
]
