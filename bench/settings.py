"""Settings of the bench's own process (seeding, the per-process comparisons): production
settings plus djangorestframework-api-key, which the key-verification comparison needs a table
for. The server under test runs on `config.settings`, exactly as production does."""

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework_api_key"]
