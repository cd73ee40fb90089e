"""Admin registrations of the credits app, one module per concern."""

from .payments import admin as payments_admin  # noqa: F401
