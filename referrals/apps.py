from django.apps import AppConfig


class ReferralsConfig(AppConfig):
    name = "referrals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (connects to registration and purchase signals)
