"""Routes of the usage API, mounted under `/api/` by config/urls.py."""

from django.urls import path

from . import views

urlpatterns = [
    path("user/credits", views.CreditsApi.as_view(), name="user-credits"),
    path("user/ledger", views.LedgerApi.as_view(), name="user-ledger"),
    path("user/ledger.csv", views.LedgerCsvApi.as_view(), name="user-ledger-csv"),
    path("user/requests", views.RequestsApi.as_view(), name="user-requests"),
    path("user/requests.csv", views.RequestsCsvApi.as_view(), name="user-requests-csv"),
    path("user/limits", views.LimitsApi.as_view(), name="user-limits"),
]
