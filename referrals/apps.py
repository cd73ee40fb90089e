from django.apps import AppConfig


class ReferralsConfig(AppConfig):
    name = "referrals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (connects to registration and purchase signals)
        from .console import invite_panel_register

        invite_panel_register()  # the console's invite page (credits.console.panels)
