from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "credits.payments"
    label = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (the ledger's claw-back collections)
