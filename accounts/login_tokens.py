"""Login tokens (`Authorization: Token ...`): knox's, with the header checked first.

Its own module, importing nothing of ours: DRF imports the default authentication classes while
`config.errors` (which the other authentication classes use) is still being imported.
"""

import re
from typing import Any

from knox.auth import TokenAuthentication
from rest_framework import exceptions

# What knox issues: hex characters (and an optional printable TOKEN_PREFIX). Anything else in the
# header is refused before knox decodes it (a byte that is not UTF-8 was a 500) or queries it (a
# NUL was a 500 from PostgreSQL).
_LOGIN_TOKEN = re.compile(rb"[\x21-\x7e]{1,256}")


class LoginTokenAuthentication(TokenAuthentication):
    """knox's token authentication, answering 401 for a token it could never have issued."""

    def authenticate_credentials(self, token: bytes) -> tuple[Any, Any]:
        if not _LOGIN_TOKEN.fullmatch(token):
            raise exceptions.AuthenticationFailed("Invalid token.")
        user, auth_token = super().authenticate_credentials(token)
        return user, auth_token
