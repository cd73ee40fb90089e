"""Text that PostgreSQL can store.

A JSON string (and so a Python one) can carry a NUL (`\\u0000`) and an unpaired surrogate
(`\\ud800`): PostgreSQL's text and jsonb refuse the first, UTF-8 cannot encode the second. Input
that reaches the database is checked with `storable` first, so either is a 400, not a 500.
"""


def storable(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def made_storable(text: str) -> str:
    """`text` with what PostgreSQL cannot store taken out: NULs dropped, an unpaired surrogate
    replaced with `?`. For text that is only recorded, never a reason to refuse a request."""
    return text.replace("\x00", "").encode(errors="replace").decode()
