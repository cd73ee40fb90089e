"""Panels that other apps add to the console (as the admin's `user_panel_register` does).

The console imports none of the apps above it in the arrows (`referrals` is imported by
nobody): such an app registers a panel here from its `AppConfig.ready`, and the console links
it in the navigation and serves it at `/my-credits/<slug>`."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accounts.models import User


@dataclass(frozen=True)
class ConsolePanel:
    slug: str  # the URL: /my-credits/<slug>
    title: str  # the navigation's label and the page's heading
    template: str  # rendered inside the console's layout
    context: Callable[[User], dict[str, Any]]  # what the template reads, for the logged-in user


_PANELS: dict[str, ConsolePanel] = {}


def console_panel_register(panel: ConsolePanel) -> None:
    """Add (or replace, by slug) a panel, in the order registered."""
    _PANELS[panel.slug] = panel


def console_panels() -> list[ConsolePanel]:
    return list(_PANELS.values())


def console_panel(slug: str) -> ConsolePanel | None:
    return _PANELS.get(slug)
