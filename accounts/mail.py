"""The mail outbox: write a message in the causing transaction, send it after commit.

`email_enqueue` renders and stores the message and asks, on commit, for a task to send it;
`outbound_email_send` (the task's body) claims the row with a conditional update, so that the
after-commit task and the beat sweep never both send it, and sends through Django's mail
framework (the transport is `EMAIL_URL`). A failed send is retried by the sweep with backoff; a
lost broker delays mail (the sweep finds the row), never loses it. Delivery is at least once:
a sender that dies between the SMTP answer and its update sends again after its lease.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F, Q
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.module_loading import import_string

from .models import OutboundEmail, OutboundEmailStatus

logger = logging.getLogger(__name__)

# Delay before attempt n+1 after n failures; past the last, the row fails for good (about a day).
RETRY_DELAYS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
    timedelta(hours=12),
)
# How long a sender owns a claimed row (EMAIL_TIMEOUT is 10 s per SMTP step).
LEASE = timedelta(minutes=5)


def email_render(*, template: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html) from `TEMPLATE_subject.txt`, `TEMPLATE.txt` and, if present,
    `TEMPLATE.html`. The text part always exists."""
    context = {"dashboard_url": settings.DASHBOARD_URL, **context}
    subject = " ".join(render_to_string(f"{template}_subject.txt", context).split())
    text = render_to_string(f"{template}.txt", context)
    try:
        html = str(render_to_string(f"{template}.html", context))
    except TemplateDoesNotExist:
        html = ""
    return subject, text, html


def email_enqueue(
    *,
    to: str,
    template: str = "",
    context: dict[str, Any] | None = None,
    prepare: str = "",
    **rendered: str,
) -> OutboundEmail:
    """Write one message to the outbox, in the caller's transaction, and send it after commit.
    Either `subject` and `body_text` (and optionally `body_html`) already rendered, or a
    `template` rendered here with `context` (see `email_render`), or `prepare`: the dotted path
    of a function `(to) -> (subject, text, html) | None` the sender calls to write the message
    (None: nothing is sent and the row is deleted)."""
    if prepare:
        subject, text, html = "", "", ""
    elif "subject" in rendered:
        subject, text = rendered["subject"], rendered["body_text"]
        html = rendered.get("body_html", "")
    else:
        subject, text, html = email_render(template=template, context=context or {})
    email = OutboundEmail.objects.create(
        to=to,
        subject=subject[:255],
        body_text=text,
        body_html=html,
        template=template,
        prepare=prepare,
    )
    transaction.on_commit(lambda: _kick(email.pk))
    return email


def _kick(email_id: int) -> None:
    # Imported here: the task module imports this one.
    from .tasks import outbound_email_send_task

    try:
        outbound_email_send_task.delay(email_id)
    except Exception:
        # A broker that is down must not fail the request that caused the mail: the sweep
        # sends it later.
        logger.warning("outbound email %s: could not queue, the sweep will send it", email_id)


def _due(now: datetime) -> Q:
    """Rows to send at `now`: pending and due, or claimed by a sender whose lease ran out."""
    return Q(status=OutboundEmailStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=OutboundEmailStatus.SENDING, lease_until__lt=now
    )


def _claim(email_id: int) -> OutboundEmail | None:
    """Take a row for sending if it is due and nobody holds it. The conditional update is the
    lock: of two senders, exactly one changes the row."""
    now = timezone.now()
    taken = OutboundEmail.objects.filter(_due(now), pk=email_id).update(
        status=OutboundEmailStatus.SENDING, lease_until=now + LEASE, attempts=F("attempts") + 1
    )
    return OutboundEmail.objects.get(pk=email_id) if taken else None


def outbound_email_send(*, email_id: int) -> bool:
    """Send one outbox row if it is due and unclaimed; True if this call sent it."""
    email = _claim(email_id)
    if email is None:
        return False
    if email.prepare:
        prepared = import_string(email.prepare)(email.to)
        if prepared is None:
            OutboundEmail.objects.filter(pk=email.pk).delete()
            return False
        email.subject, email.body_text, email.body_html = prepared
    message = EmailMultiAlternatives(
        subject=email.subject,
        body=email.body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[email.to],
    )
    if email.body_html:
        message.attach_alternative(email.body_html, "text/html")
    try:
        message.send()
    except Exception as exc:
        # Outside any transaction: the SMTP conversation is slow I/O and holds no row lock.
        failed_for_good = email.attempts > len(RETRY_DELAYS)
        delay = RETRY_DELAYS[min(email.attempts, len(RETRY_DELAYS)) - 1]
        OutboundEmail.objects.filter(pk=email.pk, status=OutboundEmailStatus.SENDING).update(
            status=OutboundEmailStatus.FAILED if failed_for_good else OutboundEmailStatus.PENDING,
            next_attempt_at=timezone.now() + delay,
            lease_until=None,
            last_error=f"{type(exc).__name__}: {exc}"[:500],
        )
        logger.warning(
            "outbound email %s: attempt %s failed (%s)%s",
            email.pk,
            email.attempts,
            type(exc).__name__,
            ", giving up" if failed_for_good else "",
        )
        return False
    # The bodies may hold a single-use link (verification, reset): not kept once delivered.
    OutboundEmail.objects.filter(pk=email.pk).update(
        status=OutboundEmailStatus.SENT,
        sent_at=timezone.now(),
        lease_until=None,
        last_error="",
        body_text="",
        body_html="",
    )
    return True


def outbound_emails_due(*, limit: int = 200) -> list[int]:
    """Ids of the rows to send now, oldest due first."""
    return list(
        OutboundEmail.objects.filter(_due(timezone.now()))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
