"""The client's address, the one way every limit keyed on it reads it (login throttles, the
signup limit).

Each proxy in front of the service appends the address it received the request from to
`X-Forwarded-For`, so only the entries our own proxies appended can be believed: with
`TRUSTED_PROXY_COUNT` = N, the client is the Nth entry from the right. Anything to its left was
written by the client and is ignored (a client that sends `X-Forwarded-For: 1.2.3.4` gains a
fresh address per request otherwise). With N = 0 (the default: nothing in front, or a proxy
that sets REMOTE_ADDR itself) the header is ignored entirely.
"""

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    remote = str(request.META.get("REMOTE_ADDR") or "")
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return remote
    entries = [e.strip() for e in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    entries = [e for e in entries if e]
    if not entries:
        return remote
    # Fewer entries than proxies: the request skipped a proxy; every entry there is still one a
    # proxy of ours wrote, and the leftmost is the closest to the client.
    return entries[-count] if len(entries) >= count else entries[0]
