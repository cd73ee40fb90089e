"""The OpenAPI description of `/internal/v1/authorize`, `/internal/v1/settle` and
`/internal/v1/settle/batch`.

Those are plain Django views (the hot path skips DRF, see credits/gateway/views.py), so
drf-spectacular's generator never sees them. This postprocessing hook adds them to the document,
written from CONTRACT.md ("Internal API for the gateway"), so the gateway's authors and the
schema fuzzer (tests/test_schemathesis.py) have the same description as the user API.
"""

from typing import Any

_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": "string", "nullable": True}
_HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}

COMPONENTS: dict[str, dict[str, Any]] = {
    "AuthorizeRequest": {
        "type": "object",
        "required": ["api_key", "request_id", "format"],
        "properties": {
            "api_key": {"type": "string", "description": "The end user's API key."},
            "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "model": {"type": "string"},
            "format": {"type": "string", "enum": ["openai", "anthropic"]},
        },
    },
    "AuthorizeDecision": {
        "type": "object",
        "description": "Allowed: `hold_id` … `credits_remaining`. Denied: `status` and `error`, "
        "exactly what the gateway answers its client.",
        "required": ["allowed", "headers"],
        "properties": {
            "allowed": {"type": "boolean"},
            "hold_id": _STRING,
            "hold_expires_at": {"type": "string", "format": "date-time"},
            "user_id": _STRING,
            "key_id": _STRING,
            "tier": _NULLABLE_STRING,
            "credits_remaining": {"type": "integer"},
            "status": {"type": "integer", "enum": [401, 403, 429]},
            "error": {"type": "object"},
            "headers": _HEADERS,
        },
    },
    "SettleRequest": {
        "type": "object",
        "required": ["request_id", "outcome"],
        "properties": {
            "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "outcome": {"type": "string", "enum": ["success", "failure"]},
            "http_status": {"type": "integer", "minimum": 100, "maximum": 599, "nullable": True},
            "model": {"type": "string", "nullable": True},
            "usage": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "prompt_tokens": {"type": "integer", "minimum": 0},
                    "completion_tokens": {"type": "integer", "minimum": 0},
                },
            },
            "reason": {"type": "string", "maxLength": 64, "nullable": True},
        },
    },
    "SettleResponse": {
        "type": "object",
        "required": ["request_id", "charged", "credits_remaining"],
        "properties": {
            "request_id": _STRING,
            "charged": {"type": "integer", "enum": [0, 1]},
            "credits_remaining": {"type": "integer"},
        },
    },
    "SettleBatchRequest": {
        "type": "object",
        "required": ["settles"],
        "properties": {
            "settles": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": {"$ref": "#/components/schemas/SettleRequest"},
            }
        },
    },
    "SettleBatchItemError": {
        "type": "object",
        "description": "An item that the single settle would have answered with this `status`.",
        "required": ["request_id", "error", "status"],
        "properties": {
            "request_id": _NULLABLE_STRING,
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": _STRING, "message": _STRING, "field": _STRING},
            },
            "status": {"type": "integer", "enum": [400, 404, 409, 500, 503]},
        },
    },
    "SettleBatchResponse": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "description": "One per item, in the order of `settles`.",
                "items": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/SettleResponse"},
                        {"$ref": "#/components/schemas/SettleBatchItemError"},
                    ]
                },
            }
        },
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _operation(
    operation_id: str, summary: str, request: str, response: str, errors: dict[str, str]
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}
            },
        },
        "400": _error("invalid_request: a malformed body (`field` names the culprit)."),
        "401": _error("invalid_service_token"),
        "405": _error("method_not_allowed"),
        "503": _error("unavailable: the database cannot be reached."),
    }
    responses.update({status: _error(text) for status, text in errors.items()})
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["internal"],
        "security": [{"serviceToken": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}
            },
        },
        "responses": responses,
    }


PATHS: dict[str, dict[str, Any]] = {
    "/internal/v1/authorize": {
        "post": _operation(
            "internal_authorize",
            "Verify an end user's key, apply the tier's limits and hold one credit.",
            "AuthorizeRequest",
            "AuthorizeDecision",
            {"409": "request_id_conflict: the request id was used with another key."},
        )
    },
    "/internal/v1/settle": {
        "post": _operation(
            "internal_settle",
            "Commit (success) or release (failure) the hold of an authorized request.",
            "SettleRequest",
            "SettleResponse",
            {
                "404": "request_not_found",
                "409": "request_already_settled: settled before with the other outcome.",
            },
        )
    },
    "/internal/v1/settle/batch": {
        "post": _operation(
            "internal_settle_batch",
            "Settle up to 100 requests in one call; each item is answered in order as the "
            "single settle answers it (its 400, 404 or 409 as an item error), independently.",
            "SettleBatchRequest",
            "SettleBatchResponse",
            {},
        )
    },
}

SERVICE_TOKEN_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "A gateway service token (`manage.py create_service_token`).",
}


def add_internal_api(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: adds what is missing, overrides nothing."""
    paths = result.setdefault("paths", {})
    for path, operations in PATHS.items():
        paths.setdefault(path, operations)
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in COMPONENTS.items():
        schemas.setdefault(name, schema)
    schemas.setdefault(
        "ErrorResponse",
        {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": _STRING, "message": _STRING, "field": _STRING},
                }
            },
        },
    )
    components.setdefault("securitySchemes", {}).setdefault("serviceToken", SERVICE_TOKEN_SCHEME)
    return result
