"""HTTPS deliveries connect to the checked address yet speak to the name: TLS SNI, the
certificate's host and the Host header are the URL's host. A receiver with a real TLS server
on loopback and its own certificate authority (trusted by the sender through its TLS seam)."""

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook

from credits.notifications import outbound
from credits.notifications.models import DeliveryAttempt
from tests.factories import UserFactory

from .conftest import record

pytestmark = pytest.mark.django_db(transaction=True)


def self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TlsReceiver:
    def __init__(self, cert: Path, key: Path) -> None:
        self.sni: list[str | None] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

        def note_sni(sock: Any, name: str | None, ctx: Any) -> None:
            self.sni.append(name)

        context.sni_callback = note_sni
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                box.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> Any:
                sock, address = super().get_request()
                return context.wrap_socket(sock, server_side=True), address

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a refused handshake is what some tests expect

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[TlsReceiver, Path]]:
    cert, key = self_signed(tmp_path, "localhost")
    receiver = TlsReceiver(cert, key)
    yield receiver, cert
    receiver.stop()


def _trust(monkeypatch: pytest.MonkeyPatch, cert: Path) -> None:
    monkeypatch.setattr(outbound, "tls_context", lambda: ssl.create_default_context(cafile=cert))


def _endpoint(user: Any, url: str) -> str:
    from credits.notifications import services

    return services.webhook_endpoint_create(user=user, url=url, events=None)[1]


def test_https_speaks_to_the_name_while_connecting_to_the_checked_address(
    allow_private: None, tls: tuple[TlsReceiver, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, cert = tls
    _trust(monkeypatch, cert)
    user = UserFactory.create()
    secret = _endpoint(user, f"https://localhost:{receiver.port}/hook?x=1")

    event_id = record(user)

    [(path, headers, body)] = receiver.requests
    assert path == "/hook?x=1"
    assert receiver.sni == ["localhost"]
    assert headers["host"] == f"localhost:{receiver.port}"
    assert Webhook(secret).verify(body, headers)["id"] == event_id
    assert DeliveryAttempt.objects.get().status_code == 200


def test_an_untrusted_certificate_is_a_failed_attempt(
    allow_private: None, tls: tuple[TlsReceiver, Path]
) -> None:
    receiver, _ = tls
    user = UserFactory.create()
    _endpoint(user, f"https://localhost:{receiver.port}/hook")

    record(user)

    assert receiver.requests == []
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code is None and attempt.error.startswith("tls_error")


def test_a_certificate_for_another_name_is_a_failed_attempt(
    allow_private: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path, "example.com")
    receiver = TlsReceiver(cert, key)
    try:
        _trust(monkeypatch, cert)
        user = UserFactory.create()
        _endpoint(user, f"https://localhost:{receiver.port}/hook")

        record(user)

        assert receiver.requests == []
        assert DeliveryAttempt.objects.get().error.startswith("tls_error")
    finally:
        receiver.stop()
