"""How the OpenAPI document describes our authentication classes (imported by
`AccountsConfig.ready`, which is how drf-spectacular finds extensions)."""

from typing import Any

from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class LoginTokenScheme(KnoxTokenScheme):
    """knox's own description, for our subclass of its authentication class."""

    target_class = "accounts.login_tokens.LoginTokenAuthentication"


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The user's own API key, as `Authorization: Bearer KEY` or "
            "`X-API-Key: KEY`.",
        }
