"""The notifications API: settings, webhook endpoints, their test event and delivery log.

Views only parse input, call one service and serialize its result.
"""

from typing import Any

from django.core import signing
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from config.errors import ApplicationError, error_responses

from . import services
from .serializers import (
    DeliveriesPageSerializer,
    DeliveryAttemptSerializer,
    NotificationSettingsSerializer,
    WebhookCreatedSerializer,
    WebhookCreateInputSerializer,
    WebhookSerializer,
    WebhookTestSerializer,
    notification_settings_parse,
)

DELIVERIES_PAGE_SIZE = 50
_CURSOR_SALT = "notifications.deliveries"


def _user(request: Request) -> User:
    assert isinstance(request.user, User)
    return request.user


class NotificationSettingsApi(APIView):
    @extend_schema(
        operation_id="user_notifications_get",
        responses={200: NotificationSettingsSerializer, **error_responses(401)},
        tags=["notifications"],
        summary="The low-balance threshold and which event types are emailed.",
    )
    def get(self, request: Request) -> Response:
        return Response(services.notification_settings(user_id=_user(request).pk))

    @extend_schema(
        operation_id="user_notifications_update",
        request=NotificationSettingsSerializer(partial=True),
        responses={
            200: NotificationSettingsSerializer,
            **error_responses(
                400,
                401,
                s400="invalid_request (field names the unknown key, type or bad value), "
                "invalid_json",
            ),
        },
        tags=["notifications"],
        summary="Change any part of the notification settings.",
    )
    def patch(self, request: Request) -> Response:
        parsed = notification_settings_parse(request.data)
        user = _user(request)
        services.notification_settings_update(user_id=user.pk, **parsed)
        return Response(services.notification_settings(user_id=user.pk))


class WebhooksApi(APIView):
    @extend_schema(
        operation_id="user_webhooks_list",
        responses={200: WebhookSerializer(many=True), **error_responses(401)},
        tags=["notifications"],
        summary="The user's webhook endpoints, newest first (never their secrets).",
    )
    def get(self, request: Request) -> Response:
        endpoints = _user(request).webhook_endpoints.order_by("-created_at")
        return Response(WebhookSerializer(endpoints, many=True).data)

    @extend_schema(
        operation_id="user_webhooks_create",
        request=WebhookCreateInputSerializer,
        responses={
            201: WebhookCreatedSerializer,
            **error_responses(
                400,
                401,
                s400="invalid_webhook_url (not https://, or resolves to a private, loopback, "
                "link-local, multicast or reserved address), too_many_webhooks (10 per user), "
                "missing_field, invalid_request, invalid_json",
            ),
        },
        tags=["notifications"],
        summary="Add a webhook endpoint; its signing secret is in this response only.",
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ApplicationError("The body must be a JSON object.", code="invalid_json")
        serializer = WebhookCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        endpoint, secret = services.webhook_endpoint_create(
            user=_user(request), url=data["url"], events=data.get("events")
        )
        body = WebhookCreatedSerializer(endpoint, context={"secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED)


_NOT_FOUND = error_responses(401, 404, s404="webhook_not_found: no such endpoint of this user")


class WebhookDetailApi(APIView):
    @extend_schema(
        operation_id="user_webhooks_delete",
        request=None,
        responses={204: OpenApiResponse(description="Deleted, with its log."), **_NOT_FOUND},
        tags=["notifications"],
        summary="Delete a webhook endpoint; nothing more is sent to it.",
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        services.webhook_endpoint_delete(user=_user(request), endpoint_id=endpoint_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookTestApi(APIView):
    @extend_schema(
        operation_id="user_webhooks_test",
        request=None,
        responses={202: WebhookTestSerializer, **_NOT_FOUND},
        tags=["notifications"],
        summary="Send a webhook.test event to this endpoint only.",
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        event = services.webhook_endpoint_test(user=_user(request), endpoint_id=endpoint_id)
        return Response({"event_id": event.public_id}, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveriesApi(APIView):
    @extend_schema(
        operation_id="user_webhooks_deliveries",
        parameters=[
            OpenApiParameter("cursor", str, description="The `next` of the previous page."),
        ],
        responses={
            200: DeliveriesPageSerializer,
            **error_responses(
                400, 401, 404, s400="invalid_request: a cursor this API did not give out"
            ),
        },
        tags=["notifications"],
        summary="The endpoint's delivery attempts, newest first.",
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        before = _cursor_before(request.query_params.get("cursor"))
        rows = services.delivery_rows(
            user=_user(request), endpoint_id=endpoint_id, before=before, limit=DELIVERIES_PAGE_SIZE
        )
        page, more = rows[:DELIVERIES_PAGE_SIZE], len(rows) > DELIVERIES_PAGE_SIZE
        next_url = None
        if more:
            cursor = signing.dumps(page[-1].pk, salt=_CURSOR_SALT, compress=True)
            next_url = request.build_absolute_uri(f"{request.path}?cursor={cursor}")
        return Response(
            {"results": DeliveryAttemptSerializer(page, many=True).data, "next": next_url}
        )


def _cursor_before(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        # Signed: a cursor is opaque and cannot be forged into anything but a position.
        before: Any = signing.loads(cursor[:200], salt=_CURSOR_SALT)
    except signing.BadSignature:
        before = None
    if not isinstance(before, int) or isinstance(before, bool):
        raise ApplicationError(
            "cursor is not one this API gave out; use the `next` URL as it is.", field="cursor"
        )
    return before
