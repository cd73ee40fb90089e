"""Webhook signing secrets: made here, shown once, stored encrypted.

The secret must be readable again to sign each delivery, so it is encrypted, not hashed:
Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a key derived by HKDF from
`WEBHOOK_SECRETS_KEY`, or from `SECRET_KEY` when that is not set. A dedicated key lets an
operator rotate `SECRET_KEY` (sessions, signed cursors) without losing every endpoint's secret.
"""

import base64
import secrets
from functools import cache

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PREFIX = "whsec_"
SECRET_BYTES = 32  # the contract asks for at least 24


def secret_new() -> str:
    """`whsec_` + base64 of random bytes: the format Standard Webhooks libraries accept."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@cache
def _fernet(master: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"kimi-billing webhook secrets v1",
    ).derive(master.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _master() -> str:
    return getattr(settings, "WEBHOOK_SECRETS_KEY", "") or settings.SECRET_KEY


def secret_encrypt(secret: str) -> str:
    return _fernet(_master()).encrypt(secret.encode()).decode()


def secret_decrypt(token: str) -> str:
    return _fernet(_master()).decrypt(token.encode()).decode()
