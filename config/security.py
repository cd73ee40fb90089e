"""Cookies are `Secure` on every request that reached us over TLS.

TLS ends at the load balancer, which says so with `X-Forwarded-Proto: https`
(SECURE_PROXY_SSL_HEADER); `request.is_secure()` reads it. Django's SESSION_COOKIE_SECURE and
CSRF_COOKIE_SECURE are one fixed answer for every request: tied to SECURE_SSL_REDIRECT they were
off behind the load balancer (the redirect is off there: the service never sees plain HTTP), and
forced on they would break logging in over http://localhost in development. Marking the cookies
of each secure request is right in both places. HSTS follows the same test in Django's
SecurityMiddleware (sent only on secure requests, SECURE_HSTS_SECONDS in settings).
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SecureCookiesMiddleware:
    """Sits above the middleware that set cookies (sessions, CSRF), so it sees their cookies
    on the way out."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.is_secure():
            for morsel in response.cookies.values():
                morsel["secure"] = True
        return response
