"""Routes of the usage API, mounted under `/api/` by config/urls.py."""

from django.urls import path

from . import views

urlpatterns = [
    path("user/credits", views.CreditsApi.as_view(), name="user-credits"),
    path("user/ledger", views.LedgerApi.as_view(), name="user-ledger"),
    path("user/limits", views.LimitsApi.as_view(), name="user-limits"),
]
