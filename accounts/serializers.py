"""Input validation and output shapes of the accounts API (CONTRACT.md, "Accounts and keys")."""

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from config.fields import RFC3339Field, rfc3339

from . import budgets
from .models import BUDGET_PERIODS, ApiKey, LoginSession, User

MAX_BUDGET = 2**62  # within the ledger's 64-bit amounts
DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 604_800


class UserSerializer(serializers.ModelSerializer[User]):
    email_verified = serializers.BooleanField(read_only=True)

    class Meta:
        model = User
        fields = ("id", "email", "email_verified", "invite_code")
        read_only_fields = fields


class UserDetailSerializer(UserSerializer):
    created_at = RFC3339Field(source="date_joined", read_only=True)

    class Meta:
        model = User
        fields: tuple[str, ...] = ("id", "email", "email_verified", "invite_code", "created_at")
        read_only_fields = fields


class UserEnvelopeSerializer(serializers.Serializer[Any]):
    user = UserSerializer()


class RegisterInputSerializer(serializers.Serializer[Any]):
    # The service validates the address (one code, `invalid_email`, for every bad one).
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    invite_code = serializers.CharField(
        # No max_length: any code that is not an inviter's, however long, is the contract's
        # `invalid_invite_code` (referrals.services looks up only codes of a code's length).
        required=False,
        allow_blank=True,
        allow_null=True,
        default="",
        help_text="An inviter's code, case-insensitive; empty or absent means none.",
    )


class LoginInputSerializer(serializers.Serializer[Any]):
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    session_only = serializers.BooleanField(
        required=False,
        default=False,
        help_text="true: a browser login, the session cookie only (no token is issued).",
    )


class TokenInputSerializer(serializers.Serializer[Any]):
    token = serializers.CharField(max_length=1024, help_text="The token from the mailed link.")


class EmailInputSerializer(serializers.Serializer[Any]):
    email = serializers.CharField(max_length=254)


class PasswordResetConfirmInputSerializer(serializers.Serializer[Any]):
    token = serializers.CharField(max_length=1024)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class PasswordChangeInputSerializer(serializers.Serializer[Any]):
    current_password = serializers.CharField(max_length=256, trim_whitespace=False)
    new_password = serializers.CharField(max_length=256, trim_whitespace=False)


class EmailChangeInputSerializer(serializers.Serializer[Any]):
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class PasswordInputSerializer(serializers.Serializer[Any]):
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class EmptySerializer(serializers.Serializer[Any]):
    pass


class LoginOutputSerializer(serializers.Serializer[Any]):
    token = serializers.CharField(
        allow_null=True,
        help_text="Send as `Authorization: Token TOKEN`; valid until logout or LOGIN_TTL_DAYS "
        "(30) after its last use. null for a `session_only` login.",
    )
    user = UserSerializer()


class LoginSessionSerializer(serializers.ModelSerializer[LoginSession]):
    token = serializers.SerializerMethodField(help_text="This login issued a login token.")
    cookie = serializers.SerializerMethodField(help_text="This login has a session cookie.")
    current = serializers.SerializerMethodField(help_text="The login this request came with.")
    created_at = RFC3339Field()
    last_used_at = RFC3339Field(help_text="Accurate to a minute.")
    expires_at = RFC3339Field()

    class Meta:
        model = LoginSession
        fields = (
            "id",
            "token",
            "cookie",
            "current",
            "user_agent",
            "created_at",
            "last_used_at",
            "expires_at",
        )
        read_only_fields = fields

    def get_token(self, obj: LoginSession) -> bool:
        return obj.auth_token_id is not None

    def get_cookie(self, obj: LoginSession) -> bool:
        return bool(obj.session_key)

    def get_current(self, obj: LoginSession) -> bool:
        return obj.pk == self.context.get("current_id")


class BudgetSerializer(serializers.Serializer[Any]):
    credits = serializers.IntegerField(min_value=0, max_value=MAX_BUDGET)
    period = serializers.ChoiceField(choices=BUDGET_PERIODS, help_text="UTC calendar periods.")


def _allowed_models() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=64),
        allow_null=True,
        allow_empty=True,
        max_length=100,
        required=False,
        help_text="Model ids this key may use; null: all.",
    )


def _budget() -> BudgetSerializer:
    return BudgetSerializer(allow_null=True, required=False, help_text="null: no budget.")


class ApiKeySerializer(serializers.ModelSerializer[ApiKey]):
    created_at = RFC3339Field()
    last_used_at = RFC3339Field(allow_null=True, help_text="Accurate to a minute.")
    expires_at = RFC3339Field(allow_null=True)
    budget = serializers.SerializerMethodField()
    spent = serializers.SerializerMethodField(
        help_text="Credits charged in the budget's current period (no budget: all time)."
    )
    period_resets_at = serializers.SerializerMethodField()
    previous_expires_at = RFC3339Field(
        allow_null=True, help_text="Until when the secret before the last rotation works."
    )

    class Meta:
        model = ApiKey
        fields = (
            "id",
            "name",
            "prefix",
            "created_at",
            "last_used_at",
            "expires_at",
            "budget",
            "allowed_models",
            "spent",
            "period_resets_at",
            "previous_expires_at",
        )
        read_only_fields = fields

    def get_budget(self, obj: ApiKey) -> dict[str, Any] | None:
        if obj.budget_credits is None:
            return None
        return {"credits": obj.budget_credits, "period": obj.budget_period}

    def get_spent(self, obj: ApiKey) -> int:
        return budgets.key_spent(obj, timezone.now())

    def get_period_resets_at(self, obj: ApiKey) -> str | None:
        end = budgets.period_end(obj.budget_period, timezone.now())
        return rfc3339(end) if end is not None else None


class ApiKeyCreateInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    expires_at = RFC3339Field(
        required=False,
        allow_null=True,
        default=None,
        help_text="When the key stops working (ISO 8601; a naive value is UTC). Absent: never.",
    )
    budget = _budget()
    allowed_models = _allowed_models()


class ApiKeyUpdateInputSerializer(serializers.Serializer[Any]):
    """PATCH: only the fields present change."""

    name = serializers.CharField(max_length=100, required=False)
    budget = _budget()
    allowed_models = _allowed_models()


class ApiKeyRotateInputSerializer(serializers.Serializer[Any]):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_GRACE_SECONDS,
        required=False,
        default=DEFAULT_GRACE_SECONDS,
        help_text="How long the previous secret keeps working.",
    )


class ApiKeyRotatedSerializer(serializers.ModelSerializer[ApiKey]):
    key = serializers.SerializerMethodField(help_text="The new full key. Shown this once only.")
    previous_expires_at = RFC3339Field(allow_null=True)

    class Meta:
        model = ApiKey
        fields = ("id", "name", "prefix", "key", "previous_expires_at")
        read_only_fields = fields

    def get_key(self, obj: ApiKey) -> str:
        return str(self.context["raw_key"])


class ApiKeyCreatedSerializer(serializers.ModelSerializer[ApiKey]):
    key = serializers.SerializerMethodField(help_text="The full key. Shown this once only.")
    created_at = RFC3339Field()
    expires_at = RFC3339Field(allow_null=True)

    class Meta:
        model = ApiKey
        fields = ("id", "name", "prefix", "key", "created_at", "expires_at")
        read_only_fields = fields

    def get_key(self, obj: ApiKey) -> str:
        return str(self.context["raw_key"])
