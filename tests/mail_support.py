"""Mail in tests: a real SMTP server (aiosmtpd) on a free loopback port, and the tokens of the
links in the messages it receives (or, in tests whose transaction never commits, in the outbox
rows still waiting to be sent)."""

import email
import email.policy
import re
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from accounts.models import OutboundEmail

TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_:\-]+)")


class Mailbox:
    """What the SMTP server received, as parsed messages."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if address in str(m["To"])]

    def wait_for(self, address: str, count: int = 1, timeout: float = 10) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.to(address)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} message(s) to {address} never arrived")
            time.sleep(0.02)
        return self.to(address)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "every message has a plain-text part"
    return str(part.get_content())


def token_in(message: EmailMessage) -> str:
    match = TOKEN.search(text_of(message))
    assert match, text_of(message)
    return match.group(1)


def outbox_token(to: str, template: str) -> str:
    """The token of the newest unsent outbox row to `to` (tests whose transaction never
    commits: the row is written, the after-commit send never runs)."""
    row = OutboundEmail.objects.filter(to=to, template=template).order_by("-id").first()
    assert row is not None, f"no {template} mail to {to}"
    match = TOKEN.search(row.body_text)
    assert match, row.body_text
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp(settings: Any) -> Iterator[Mailbox]:
    """A real SMTP server on loopback, and Django's mail pointed at it (as EMAIL_URL
    `smtp://127.0.0.1:PORT` would)."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield mailbox
    finally:
        controller.stop()
