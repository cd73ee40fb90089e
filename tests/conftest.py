from collections.abc import Iterator

import pytest

from credits import clock
from tests.mail_support import smtp  # noqa: F401  (a fixture for every test)


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    clock.reset()
    yield
    clock.reset()
