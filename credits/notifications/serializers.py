"""Input parsing and output shapes of the notifications API (CONTRACT.md part 2,
"Notifications"). The outputs also document the responses in the OpenAPI schema."""

from typing import Any

from rest_framework import serializers

from config.errors import ApplicationError
from config.fields import RFC3339Field
from credits.models import MAX_CREDITS, EventType

from .services import EMAIL_TYPES


class NotificationSettingsSerializer(serializers.Serializer[Any]):
    low_balance_threshold = serializers.IntegerField(
        allow_null=True,
        min_value=0,
        max_value=MAX_CREDITS,
        help_text="credits.low fires when a ledger entry takes the balance below this; "
        "null turns it off.",
    )
    email = serializers.DictField(
        child=serializers.BooleanField(),
        help_text="One boolean per event type (every type but webhook.test): email it or not.",
    )


def notification_settings_parse(data: Any) -> dict[str, Any]:
    """A PATCH body: any part of the GET shape. Unknown keys and types are named in the 400."""
    if not isinstance(data, dict):
        raise ApplicationError("The body must be a JSON object.", code="invalid_json")
    for key in data:
        if key not in ("low_balance_threshold", "email"):
            raise ApplicationError(f"{key}: not a notification setting.", field=str(key))
    parsed: dict[str, Any] = {"email": {}}
    if "low_balance_threshold" in data:
        value = data["low_balance_threshold"]
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CREDITS
        ):
            raise ApplicationError(
                f"low_balance_threshold: an integer from 0 to {MAX_CREDITS}, or null.",
                field="low_balance_threshold",
            )
        parsed["threshold_given"], parsed["threshold"] = True, value
    if "email" in data:
        email = data["email"]
        if not isinstance(email, dict):
            raise ApplicationError(
                "email: an object of event type to true or false.", field="email"
            )
        for event_type, enabled in email.items():
            if event_type not in EMAIL_TYPES:
                raise ApplicationError(
                    f"email.{event_type}: not an event type that can be emailed.",
                    field=f"email.{event_type}",
                )
            if not isinstance(enabled, bool):
                raise ApplicationError(
                    f"email.{event_type}: must be true or false.", field=f"email.{event_type}"
                )
        parsed["email"] = dict(email)
    return parsed


class WebhookCreateInputSerializer(serializers.Serializer[Any]):
    url = serializers.CharField(max_length=2000, help_text="https:// URL to POST events to.")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.values),
        required=False,
        allow_null=True,
        allow_empty=False,
        max_length=len(EventType.values),
        help_text="The event types to send; omitted or null: every type.",
    )


class WebhookSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField(), allow_null=True)
    enabled = serializers.BooleanField()
    created_at = RFC3339Field()


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.SerializerMethodField(
        help_text="whsec_ + base64 of 32 random bytes: verify signatures with it. Shown once."
    )

    def get_secret(self, obj: Any) -> str:
        return str(self.context["secret"])


class WebhookTestSerializer(serializers.Serializer[Any]):
    event_id = serializers.CharField(help_text="The webhook.test event's id (evt_...).")


class DeliveryAttemptSerializer(serializers.Serializer[Any]):
    event_id = serializers.SerializerMethodField()
    type = serializers.SerializerMethodField()
    attempt = serializers.IntegerField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.SerializerMethodField()
    created_at = RFC3339Field()
    next_attempt_at = RFC3339Field(allow_null=True)

    def get_event_id(self, obj: Any) -> str:
        return str(obj.delivery.event.public_id)

    def get_type(self, obj: Any) -> str:
        return str(obj.delivery.event.type)

    def get_error(self, obj: Any) -> str | None:
        return obj.error or None


class DeliveriesPageSerializer(serializers.Serializer[Any]):
    results = DeliveryAttemptSerializer(many=True)
    next = serializers.CharField(allow_null=True)
