from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "credits.console"
    label = "console"
    verbose_name = "Customer console"
