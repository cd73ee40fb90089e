"""Thin views: validate input, call one service, serialize the answer."""

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config import observability
from config.errors import ApplicationError, error_responses

from . import autotopup, services
from .serializers import (
    AutoTopupInputSerializer,
    AutoTopupSerializer,
    CheckoutUrlSerializer,
    PackageSerializer,
    PaymentMethodSerializer,
    PurchaseCreatedSerializer,
    PurchaseCreateSerializer,
    PurchaseSerializer,
)


class PackageListView(APIView):
    """Public: anonymous callers see the public packages; a logged-in user also sees the
    Enterprise packages made for them."""

    permission_classes = [AllowAny]

    @extend_schema(responses=PackageSerializer(many=True), operation_id="packages_list")
    def get(self, request: Request) -> Response:
        packages = services.packages_visible(user=request.user)
        return Response(PackageSerializer(packages, many=True).data)


class PurchaseListCreateView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={200: PurchaseSerializer(many=True), **error_responses(401)},
        operation_id="purchases_list",
    )
    def get(self, request: Request) -> Response:
        purchases = services.purchases_of(user=request.user)  # type: ignore[arg-type]
        return Response(PurchaseSerializer(purchases, many=True).data)

    @extend_schema(
        request=PurchaseCreateSerializer,
        responses={
            201: PurchaseCreatedSerializer,
            **error_responses(
                400,
                401,
                403,
                409,
                502,
                503,
                s403="account_frozen",
                s409="idempotency_conflict: the Idempotency-Key was used for another package",
                s502="payment_provider_error: Stripe refused the Checkout Session",
                s503="payments_unavailable: Stripe is not configured or did not answer",
            ),
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="A retried POST with the same key returns the same purchase.",
            )
        ],
        operation_id="purchases_create",
    )
    def post(self, request: Request) -> Response:
        serializer = PurchaseCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        purchase = services.purchase_create(
            user=request.user,  # type: ignore[arg-type]
            package_slug=serializer.validated_data["package"],
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        body = {"purchase_id": str(purchase.pk), "checkout_url": purchase.checkout_url}
        return Response(body, status=status.HTTP_201_CREATED)


class PaymentMethodView(APIView):
    """The card saved for auto top-up: saved through a Checkout Session in setup mode."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={
            201: CheckoutUrlSerializer,
            **error_responses(401, 502, 503, s502="payment_provider_error"),
        },
        operation_id="payment_method_setup",
    )
    def post(self, request: Request) -> Response:
        url = autotopup.payment_method_setup_start(user=request.user)  # type: ignore[arg-type]
        return Response({"checkout_url": url}, status=status.HTTP_201_CREATED)

    @extend_schema(
        responses={200: PaymentMethodSerializer, **error_responses(401, 404)},
        operation_id="payment_method_get",
    )
    def get(self, request: Request) -> Response:
        saved = autotopup.payment_method_of(user=request.user)  # type: ignore[arg-type]
        if saved is None:
            raise ApplicationError("No payment method is saved.", code="not_found", status_code=404)
        return Response(PaymentMethodSerializer(saved).data)

    @extend_schema(
        responses={204: None, **error_responses(401)}, operation_id="payment_method_delete"
    )
    def delete(self, request: Request) -> Response:
        autotopup.payment_method_remove(user=request.user)  # type: ignore[arg-type]
        return Response(status=status.HTTP_204_NO_CONTENT)


class AutoTopupView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={200: AutoTopupSerializer, **error_responses(401)}, operation_id="auto_topup_get"
    )
    def get(self, request: Request) -> Response:
        config = autotopup.auto_topup_of(user=request.user)  # type: ignore[arg-type]
        return Response(AutoTopupSerializer(config).data)

    @extend_schema(
        request=AutoTopupInputSerializer,
        responses={
            200: AutoTopupSerializer,
            **error_responses(400, 401, 502, s400="payment_method_required, unknown_package, ..."),
        },
        operation_id="auto_topup_put",
    )
    def put(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ApplicationError("The body must be a JSON object.", code="invalid_json")
        serializer = AutoTopupInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        config = autotopup.auto_topup_set(
            user=request.user,  # type: ignore[arg-type]
            enabled=data["enabled"],
            threshold=data["threshold"],
            package_slug=data["package"],
            monthly_limit=data["monthly_limit"],
        )
        return Response(AutoTopupSerializer(config).data)


class StripeWebhookView(APIView):
    """Stripe's deliveries. The signature is checked on the raw bytes before anything is
    stored; the event is then stored once and processed by a Celery task, so Stripe gets its
    2xx without waiting for the ledger."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={
            200: OpenApiTypes.OBJECT,
            **error_responses(
                400,
                413,
                503,
                s400="invalid_signature, invalid_payload",
                s413="payload_too_large",
                s503="payments_unavailable",
            ),
        },
        parameters=[OpenApiParameter("Stripe-Signature", OpenApiTypes.STR, "header")],
        operation_id="stripe_webhook",
    )
    def post(self, request: Request) -> Response:
        # The raw bytes, not request.data: re-serialised JSON would not match the signature.
        try:
            event = services.stripe_event_verify(
                payload=_webhook_body(request), signature=request.headers.get("Stripe-Signature")
            )
        except ApplicationError:
            observability.count_webhook_event(event_type="unverified", result="rejected")
            raise
        _stored, created = services.stripe_event_record(event=event)
        observability.count_webhook_event(
            event_type=event["type"], result="received" if created else "duplicate"
        )
        return Response({"received": True, "duplicate": not created})


def _webhook_body(request: Request) -> bytes:
    """The body, up to STRIPE_WEBHOOK_MAX_BYTES rather than DATA_UPLOAD_MAX_MEMORY_SIZE.

    The site-wide 256 KB bound suits what users send; Stripe's events embed whole objects (a
    Checkout Session with its line items, an invoice) and can be larger: refused with a 4xx, a
    real one would be refused on every retry, for ever. `request.body` enforces the site-wide
    bound, so the stream is read here, under the webhook's own, still finite, bound."""
    limit = settings.STRIPE_WEBHOOK_MAX_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise ApplicationError(
            f"A Stripe event may be at most {limit} bytes.",
            code="payload_too_large",
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    # Django's stream stops at CONTENT_LENGTH, so this reads at most `limit` bytes.
    body: bytes = request._request.read(limit)
    return body
