"""Routes of the notifications API, mounted under `/api/` by config/urls.py."""

from django.urls import path

from . import views

urlpatterns = [
    path("user/notifications", views.NotificationSettingsApi.as_view(), name="user-notifications"),
    path("user/webhooks", views.WebhooksApi.as_view(), name="user-webhooks"),
    path(
        "user/webhooks/<str:endpoint_id>",
        views.WebhookDetailApi.as_view(),
        name="user-webhook",
    ),
    path(
        "user/webhooks/<str:endpoint_id>/test",
        views.WebhookTestApi.as_view(),
        name="user-webhook-test",
    ),
    path(
        "user/webhooks/<str:endpoint_id>/deliveries",
        views.WebhookDeliveriesApi.as_view(),
        name="user-webhook-deliveries",
    ),
]
