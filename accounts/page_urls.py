"""The link pages (accounts.pages), mounted at the top level by config/urls.py."""

from django.urls import path

from . import pages

urlpatterns = [
    path("verify-email", pages.verify_email_page, name="verify-email-page"),
    path("reset-password", pages.reset_password_page, name="reset-password-page"),
]
