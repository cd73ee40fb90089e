"""Time-ordered UUIDs (version 7, RFC 9562 section 5.7) for rows that are pruned by age.

A version 7 UUID starts with the Unix time in milliseconds, so ids made later sort later: a
table whose primary key is one keeps its newest ids at the right edge of the key's B-tree (an
insert touches the same few leaf pages instead of a random one), and its rows older than an
instant are a prefix of the key, which a batched delete can walk without an index of its own
(credits/retention.py: settled holds past `HOLD_RETENTION_DAYS`).

Hand-written (ten lines) rather than a package: the id must carry a given instant, the ledger's
clock (credits/clock.py, which tests move), and the packages' `uuid7()` read the system clock.
Python 3.14's `uuid.uuid7()` reads it too.
"""

import os
from datetime import datetime
from uuid import UUID

_MS_BITS = 48
_RAND_A_BITS = 12
_RAND_B_BITS = 62


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000) & ((1 << _MS_BITS) - 1)


def uuid7(at: datetime) -> UUID:
    """A random version 7 UUID whose time field is `at` (milliseconds)."""
    rand_a = int.from_bytes(os.urandom(2), "big") & ((1 << _RAND_A_BITS) - 1)
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << _RAND_B_BITS) - 1)
    value = (_ms(at) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return UUID(int=value)


def uuid7_floor(at: datetime) -> UUID:
    """The least UUID whose time field is `at`'s millisecond: every version 7 UUID made before
    that millisecond sorts below it."""
    return UUID(int=_ms(at) << 80)
