from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "credits.notifications"
    label = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (event_recorded, user_deleted)
