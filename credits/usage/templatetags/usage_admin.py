"""Template tags of the admin index: today's figures (credits.usage.dashboard)."""

from django import template

from credits.usage.dashboard import DayTotals, day_totals

register = template.Library()


@register.simple_tag
def credits_today() -> DayTotals:
    return day_totals()
