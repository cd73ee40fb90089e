"""A real webhook receiver on loopback: an `http.server` in a thread that verifies every
request's signature with the `standardwebhooks` library, as a customer's receiver would."""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import transaction
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from accounts.models import User
from credits.events import event_record
from credits.notifications import services
from credits.notifications.models import WebhookEndpoint
from tests.processes import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    payload: Any  # the verified JSON, or None when the signature did not verify
    error: str = ""


@dataclass
class Receiver:
    """What a test's receiver answers, and what it saw."""

    port: int
    secrets: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers in order; then 200
    delay: float = 0.0
    location: str = ""  # answer 302 to this
    trickle: float = 0.0  # seconds spent sending the headers a line every 100 ms
    hung_up: int = 0  # trickled answers the sender closed before they were complete
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                with receiver.lock:
                    receiver.connections += 1
                return True

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                payload, error = None, ""
                for secret in receiver.secrets:
                    try:
                        payload = Webhook(secret).verify(body, headers)
                        error = ""
                        break
                    except WebhookVerificationError as exc:
                        error = str(exc)
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body, payload, error))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.trickle:
                    # Never idle long enough for a per-read timeout: only a total one ends it.
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        deadline = time.monotonic() + receiver.trickle
                        while time.monotonic() < deadline:
                            self.wfile.write(b"X-Slow: a\r\n")
                            self.wfile.flush()
                            time.sleep(0.1)
                        self.wfile.write(b"Content-Length: 0\r\n\r\n")
                    except OSError:
                        with receiver.lock:
                            receiver.hung_up += 1
                    return
                if receiver.location:
                    status = 302
                self.send_response(status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                with contextlib.suppress(OSError):  # the sender gave up (timeout)
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verified(self) -> list[Any]:
        with self.lock:
            return [r.payload for r in self.received if r.payload is not None]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A running receiver (stop() it to play a receiver that is down)."""
    box = Receiver(port=free_port())
    box.start()
    yield box
    box.stop()


@pytest.fixture
def allow_private(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True


def endpoint_for(
    user: User, receiver: Receiver, *, events: list[str] | None = None, url: str = ""
) -> WebhookEndpoint:
    """An endpoint of `user` at the receiver, whose secret the receiver verifies with."""
    endpoint, secret = services.webhook_endpoint_create(
        user=user, url=url or receiver.url, events=events
    )
    receiver.secrets.append(secret)
    return endpoint


_causes = iter(range(10**9))


def record(user: User, type: str = "credits.low", data: dict[str, Any] | None = None) -> str:
    """Write one event as its cause would (inside a transaction); its public id."""
    cause = f"test:{type}:{next(_causes)}:{time.monotonic_ns()}"
    with transaction.atomic():
        assert event_record(
            user_id=user.pk,
            type=type,
            data=data if data is not None else {"balance": 9, "threshold": 10},
            cause=cause,
        )
    from credits.models import Event

    return Event.objects.get(cause=cause).public_id


def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.02)
