"""The pages the mailed links open when the dashboard is this service (DASHBOARD_URL's default,
`http://localhost:8000`): `/verify-email?token=` and `/reset-password?token=`. Each is one
template whose inline script posts the token to the API; a separate dashboard serves its own."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def verify_email_page(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/token_page.html", {"mode": "verify"})


def reset_password_page(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/token_page.html", {"mode": "reset"})
