"""Periodic work of the usage reports (scheduled in settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from .dashboard import usage_hours_roll_up


@shared_task(name="credits.usage.usage_hours_roll_up", ignore_result=True)
def roll_up_hours() -> int:
    """The closed hours' totals for the admin index (credits.usage.models.UsageHour)."""
    return usage_hours_roll_up()
