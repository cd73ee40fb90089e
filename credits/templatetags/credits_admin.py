"""Template filters of the admin console. Today's figures on the index page are
`credits.usage.dashboard` (tag library `usage_admin`): they read the usage buckets."""

from django import template

register = template.Library()


@register.filter
def thousands(value: int) -> str:
    """12345 → "12,345"."""
    return f"{value:,}"
