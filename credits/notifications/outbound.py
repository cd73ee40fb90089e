"""Webhook POSTs that cannot be turned against our own network (SSRF).

A URL is checked by resolving its host once and refusing it if any address is private,
loopback, link-local, multicast, reserved, unspecified or otherwise not global (IPv4 and IPv6,
including IPv4 inside IPv6: mapped, 6to4, Teredo). The connection then goes to the checked
address itself: no second lookup, so a DNS answer that changes between check and connect
(DNS rebinding) cannot redirect it. The request keeps the name: the `Host` header, TLS SNI
and certificate verification are for the host in the URL. Redirects are never followed
(`http.client` does not follow them; a 3xx is just a failed delivery), the answer is read up to
`MAX_RESPONSE_BYTES`, and a watchdog closes the socket at the total timeout, so a receiver that
trickles bytes cannot hold a worker longer than that.

`WEBHOOK_ALLOW_PRIVATE=1` (development and tests only) allows `http://` and every address.
"""

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_TIMEOUT = 10.0


class BlockedAddress(Exception):
    """The URL's scheme or an address its host resolves to is not allowed."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP literal to connect to


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str  # "" when the receiver answered (whatever its status)


def allow_private() -> bool:
    return bool(getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False))


def timeout() -> float:
    return float(getattr(settings, "WEBHOOK_TIMEOUT_SECONDS", DEFAULT_TIMEOUT))


def tls_context() -> ssl.SSLContext:
    """The system's trust store, certificate and host name checked (a seam for the tests'
    own certificate authority)."""
    return ssl.create_default_context()


def _is_blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and _is_blocked(embedded):
            return True
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def target_resolve(url: str) -> Target:
    """Check `url` and resolve its host once; raise BlockedAddress when it may not be called."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_private() else ("https",)
    if scheme not in allowed:
        raise BlockedAddress("the URL must use https://")
    if not parts.hostname or parts.username or parts.password:
        raise BlockedAddress("the URL must name a host (and no credentials)")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise BlockedAddress("the URL's port is not valid") from exc
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise BlockedAddress("the URL's host does not resolve") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise BlockedAddress("the URL's host does not resolve")
    if not allow_private():
        for address in addresses:
            # A scope id (fe80::1%eth0) is link-local anyway; strip it to parse.
            if _is_blocked(ipaddress.ip_address(address.split("%")[0])):
                raise BlockedAddress("the URL's host resolves to a non-public address")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme, parts.hostname, port, path, addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address; `host` stays the name (the Host header)."""

    def __init__(self, target: Target, seconds: float) -> None:
        super().__init__(target.host, target.port, timeout=seconds)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As above, with TLS verified for the name (SNI and the certificate's host)."""

    def __init__(self, target: Target, seconds: float) -> None:
        self._tls = tls_context()
        super().__init__(target.host, target.port, timeout=seconds, context=self._tls)
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def post(target: Target, *, body: bytes, headers: dict[str, str]) -> Answer:
    """POST `body` to the checked target within the total timeout. Never raises for the
    receiver's faults: they come back as `Answer.error`."""
    seconds = timeout()
    connection: http.client.HTTPConnection = (
        _PinnedHTTPSConnection(target, seconds)
        if target.scheme == "https"
        else _PinnedHTTPConnection(target, seconds)
    )
    expired = threading.Event()

    def watchdog() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, watchdog)
    timer.daemon = True
    started = time.monotonic()
    timer.start()
    try:
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Content-Type": "application/json", "User-Agent": "kimi-billing"},
        )
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)  # bounded: the body is only drained, never kept
        if expired.is_set() or time.monotonic() - started > seconds:
            return Answer(None, "timeout")
        return Answer(response.status, "")
    except TimeoutError:
        return Answer(None, "timeout")
    except ssl.SSLError as exc:
        return Answer(None, f"tls_error: {type(exc).__name__}")
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            return Answer(None, "timeout")
        if isinstance(exc, ConnectionRefusedError):
            return Answer(None, "connection_refused")
        return Answer(None, f"connection_error: {type(exc).__name__}")
    finally:
        timer.cancel()
        connection.close()
