"""Routes of the accounts API, mounted under `/api/` by config/urls.py."""

from django.urls import path

from . import apis

urlpatterns = [
    path("auth/register", apis.RegisterApi.as_view(), name="auth-register"),
    path("auth/login", apis.LoginApi.as_view(), name="auth-login"),
    path("auth/logout", apis.LogoutApi.as_view(), name="auth-logout"),
    path("user/sessions", apis.LoginSessionsApi.as_view(), name="user-sessions"),
    path(
        "user/sessions/<str:session_id>",
        apis.LoginSessionDetailApi.as_view(),
        name="user-session-detail",
    ),
    path("user/keys", apis.ApiKeysApi.as_view(), name="user-keys"),
    path("user/keys/<str:key_id>", apis.ApiKeyDetailApi.as_view(), name="user-key-detail"),
]
