"""Celery tasks of the accounts app: thin, idempotent, taking ids (accounts.mail does the work)."""

from celery import shared_task

from .mail import outbound_email_send, outbound_emails_due


@shared_task(name="accounts.tasks.outbound_email_send")
def outbound_email_send_task(email_id: int) -> bool:
    return outbound_email_send(email_id=email_id)


@shared_task(name="accounts.tasks.outbound_email_sweep")
def outbound_email_sweep() -> int:
    """Send what is due: rows whose after-commit task was lost, and failed sends due again."""
    sent = 0
    for email_id in outbound_emails_due():
        sent += outbound_email_send(email_id=email_id)
    return sent
