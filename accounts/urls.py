"""Routes of the accounts API, mounted under `/api/` by config/urls.py."""

from django.urls import path

from . import apis

urlpatterns = [
    path("auth/register", apis.RegisterApi.as_view(), name="auth-register"),
    path("auth/login", apis.LoginApi.as_view(), name="auth-login"),
    path("auth/logout", apis.LogoutApi.as_view(), name="auth-logout"),
    path("auth/verify-email", apis.VerifyEmailApi.as_view(), name="auth-verify-email"),
    path(
        "auth/verify-email/resend",
        apis.VerifyEmailResendApi.as_view(),
        name="auth-verify-email-resend",
    ),
    path("auth/password-reset", apis.PasswordResetApi.as_view(), name="auth-password-reset"),
    path(
        "auth/password-reset/confirm",
        apis.PasswordResetConfirmApi.as_view(),
        name="auth-password-reset-confirm",
    ),
    path("auth/password", apis.PasswordChangeApi.as_view(), name="auth-password"),
    path("user", apis.UserApi.as_view(), name="user"),
    path("user/email", apis.EmailChangeApi.as_view(), name="user-email"),
    path("user/sessions", apis.LoginSessionsApi.as_view(), name="user-sessions"),
    path(
        "user/sessions/<str:session_id>",
        apis.LoginSessionDetailApi.as_view(),
        name="user-session-detail",
    ),
    path("user/keys", apis.ApiKeysApi.as_view(), name="user-keys"),
    path("user/keys/<str:key_id>", apis.ApiKeyDetailApi.as_view(), name="user-key-detail"),
    path("user/keys/<str:key_id>/rotate", apis.ApiKeyRotateApi.as_view(), name="user-key-rotate"),
]
