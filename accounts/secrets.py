"""Secrets handed to clients: end-user API keys and gateway service tokens.

Both are 32 random bytes, so a fast digest (SHA-256) is the right way to store them: slow,
salted hashes (PBKDF2, argon2) exist to make guessing *low-entropy* passwords expensive, while
guessing 256 random bits is infeasible at any speed. A fast, unsalted digest also lets the hot
path find a key by an indexed equality lookup instead of testing candidates one by one.
"""

import hashlib
import secrets
import zlib

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LENGTH = 43  # 62**43 > 2**256: 32 random bytes always fit
_CHECKSUM_LENGTH = 6  # 62**6 > 2**32: a CRC-32 always fits
DISPLAY_PREFIX_LENGTH = 8  # characters after the configured prefix shown in listings


def _base62(number: int, width: int) -> str:
    chars = []
    while number:
        number, rest = divmod(number, 62)
        chars.append(_ALPHABET[rest])
    return "".join(reversed(chars)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LENGTH)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    """`prefix` + 43 base62 characters of 32 random bytes + a 6-character CRC-32 checksum."""
    body = prefix + _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LENGTH)
    return body + _checksum(body)


def is_well_formed(secret: str, prefix: str) -> bool:
    """True when `secret` has the shape and checksum of one we issued: a mistyped or made-up
    key is refused here, without touching the database. Keys are ASCII (they travel in HTTP
    headers): anything else, an unpaired surrogate included, is refused before it is encoded."""
    if (
        not secret.isascii()
        or len(secret) != len(prefix) + _BODY_LENGTH + _CHECKSUM_LENGTH
        or not secret.startswith(prefix)
    ):
        return False
    body, checksum = secret[:-_CHECKSUM_LENGTH], secret[-_CHECKSUM_LENGTH:]
    return secrets.compare_digest(_checksum(body), checksum)


def display_prefix(secret: str, prefix: str) -> str:
    return secret[: len(prefix) + DISPLAY_PREFIX_LENGTH]
