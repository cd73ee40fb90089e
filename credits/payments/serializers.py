from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.fields import RFC3339Field
from credits.payments.models import Package, Purchase


class PriceSerializer(serializers.Serializer[Any]):
    amount = serializers.IntegerField(help_text="In the currency's minor units (cents).")
    currency = serializers.CharField()


class PackageSerializer(serializers.ModelSerializer[Package]):
    package = serializers.CharField(source="slug")
    price = serializers.SerializerMethodField()

    class Meta:
        model = Package
        fields = ("package", "name", "credits", "price", "validity_months")

    @extend_schema_field(PriceSerializer)
    def get_price(self, obj: Package) -> dict[str, Any]:
        return {"amount": obj.price_amount, "currency": obj.currency}


class PurchaseCreateSerializer(serializers.Serializer[Any]):
    package = serializers.CharField(max_length=64)


class PurchaseCreatedSerializer(serializers.Serializer[Any]):
    purchase_id = serializers.UUIDField()
    checkout_url = serializers.URLField()


class PurchaseSerializer(serializers.ModelSerializer[Purchase]):
    package = serializers.CharField(source="package.slug")
    price = serializers.SerializerMethodField()
    created_at = RFC3339Field()
    paid_at = RFC3339Field()
    credits_expire_at = serializers.SerializerMethodField()
    checkout_url = serializers.SerializerMethodField()
    receipt_url = serializers.SerializerMethodField()

    class Meta:
        model = Purchase
        fields = (
            "id",
            "package",
            "credits",
            "price",
            "validity_months",
            "status",
            "created_at",
            "paid_at",
            "credits_expire_at",
            "amount_refunded",
            "credits_clawed_back",
            "checkout_url",
            "receipt_url",
        )

    @extend_schema_field(PriceSerializer)
    def get_price(self, obj: Purchase) -> dict[str, Any]:
        return {"amount": obj.price_amount, "currency": obj.currency}

    def get_credits_expire_at(self, obj: Purchase) -> str | None:
        if obj.lot is None:
            return None
        return RFC3339Field().to_representation(obj.lot.expires_at)

    def get_checkout_url(self, obj: Purchase) -> str | None:
        """Only while the checkout can still be completed."""
        if obj.status != "pending" or not obj.checkout_url:
            return None
        return obj.checkout_url

    def get_receipt_url(self, obj: Purchase) -> str | None:
        """Stripe's hosted receipt, null until the purchase is paid."""
        if obj.paid_at is None or not obj.receipt_url:
            return None
        return obj.receipt_url


class PaymentMethodSerializer(serializers.Serializer[Any]):
    """The saved card's display fields (`StripeCustomer`), never more."""

    brand = serializers.CharField(source="card_brand")
    last4 = serializers.CharField(source="card_last4")
    exp_month = serializers.IntegerField(source="card_exp_month", allow_null=True)
    exp_year = serializers.IntegerField(source="card_exp_year", allow_null=True)


class CheckoutUrlSerializer(serializers.Serializer[Any]):
    checkout_url = serializers.URLField()


class AutoTopupInputSerializer(serializers.Serializer[Any]):
    enabled = serializers.BooleanField()
    threshold = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    package = serializers.CharField(max_length=64)
    monthly_limit = serializers.IntegerField(min_value=1, max_value=2**63 - 1)

    def to_internal_value(self, data: Any) -> Any:
        # A JSON true/false only: DRF's BooleanField would also take "yes", 1 or "on".
        if isinstance(data, dict) and "enabled" in data and not isinstance(data["enabled"], bool):
            raise serializers.ValidationError({"enabled": ["Must be true or false."]})
        return super().to_internal_value(data)


class AutoTopupSerializer(serializers.Serializer[Any]):
    enabled = serializers.BooleanField()
    threshold = serializers.IntegerField(allow_null=True)
    package: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    monthly_limit = serializers.IntegerField(allow_null=True)
    failures = serializers.IntegerField()
    disabled_reason = serializers.SerializerMethodField()

    def get_disabled_reason(self, obj: Any) -> str | None:
        return obj.disabled_reason or None
