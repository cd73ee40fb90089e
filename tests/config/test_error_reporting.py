"""Error reporting (`SENTRY_DSN`): what sentry-sdk would send, captured by a real HTTP receiver
on loopback standing in for Sentry, holds the error and its request id but none of the
credentials the failing request carried (headers, cookie, body, local variables, the message,
an ERROR log line)."""

import gzip
import socket
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from accounts import secrets
from config.error_reporting import FILTERED, scrub_event, scrub_text
from tests.embedded import embedded_python

API_KEY = secrets.new_secret("sk-kimi-")
SERVICE_TOKEN = secrets.new_secret("svc-")
LOGIN_TOKEN = "9f" * 32
PASSWORD = "hunter2 correct horse battery"
STRIPE_KEY = "sk_test_51HxYzAbCdEfGhIjKlMnOp"
WEBHOOK_SECRET = "whsec_AbCdEfGhIjKlMnOpQrSt"
SESSION_ID = "q1w2e3r4t5y6u7i8o9p0asdfghjklzxc"

FAILING_APP = f"""
import json, logging, sys
import django
django.setup()
import sentry_sdk
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import path

def boom(request):
    raw_key = request.headers["X-API-Key"]
    password = json.loads(request.body)["password"]
    logging.getLogger("credits.example").error(
        "could not check key %s for token %s", raw_key, {LOGIN_TOKEN!r})
    # The password is only in a local variable and the body: free text cannot be recognised
    # in a message, so the code never puts one there; credentials have shapes that can be.
    assert password
    raise RuntimeError(f"key {{raw_key}} refused with {STRIPE_KEY}")

urlpatterns = [path("boom", boom)]
call_command("migrate", verbosity=0)

with override_settings(ROOT_URLCONF="__main__"):
    response = Client(raise_request_exception=False).post(
        "/boom",
        json.dumps({{"password": {PASSWORD!r}, "webhook_secret": {WEBHOOK_SECRET!r}}}),
        content_type="application/json",
        headers={{
            "Authorization": "Bearer {SERVICE_TOKEN}",
            "X-API-Key": "{API_KEY}",
            "Cookie": "sessionid={SESSION_ID}",
            "X-Request-ID": "req-sentry-1",
        }},
    )
print(response.status_code)
sentry_sdk.flush(timeout=10)
"""


@pytest.fixture
def sentry_receiver() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback HTTP server answering as Sentry's ingest does; keeps each decoded body."""
    received: list[bytes] = []

    class Ingest(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding == "br":
                import brotli

                body = brotli.decompress(body)
            received.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Ingest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port, received
    finally:
        server.shutdown()
        server.server_close()


def test_a_reported_error_carries_its_request_id_and_no_credential(
    tmp_path: Path, sentry_receiver: tuple[int, list[bytes]]
) -> None:
    port, received = sentry_receiver
    out = embedded_python(
        tmp_path,
        FAILING_APP,
        SENTRY_DSN=f"http://publickey@127.0.0.1:{port}/1",
        SENTRY_ENVIRONMENT="test",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "500"
    sent = b"\n".join(received).decode()
    # Something real was reported: the exception, the error log line, the request id.
    assert "RuntimeError" in sent, sent[:2000]
    assert "could not check key" in sent
    assert '"request_id":"req-sentry-1"' in sent.replace(" ", "")
    assert '"environment":"test"' in sent.replace(" ", "")
    for secret in (
        API_KEY,
        SERVICE_TOKEN,
        LOGIN_TOKEN,
        PASSWORD,
        STRIPE_KEY,
        WEBHOOK_SECRET,
        SESSION_ID,
    ):
        assert secret not in sent, secret


@pytest.mark.parametrize(
    "secret",
    [API_KEY, SERVICE_TOKEN, LOGIN_TOKEN, STRIPE_KEY, WEBHOOK_SECRET, f"Token {LOGIN_TOKEN}"],
)
def test_a_credential_inside_any_text_is_filtered(secret: str) -> None:
    assert scrub_text(f"refused ({secret}) at 10:00") == f"refused ({FILTERED}) at 10:00"


def test_values_under_secret_names_are_filtered_wherever_they_sit() -> None:
    event = {
        "request": {"headers": {"Authorization": "x", "Accept": "application/json"}},
        "extra": {"nested": [{"password": "p", "api_key": "k", "model": "kimi-k2"}]},
    }
    scrubbed = scrub_event(event)  # type: ignore[arg-type]
    assert scrubbed["request"]["headers"] == {
        "Authorization": FILTERED,
        "Accept": "application/json",
    }
    assert scrubbed["extra"]["nested"] == [
        {"password": FILTERED, "api_key": FILTERED, "model": "kimi-k2"}
    ]
