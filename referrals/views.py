"""The referral API (CONTRACT.md, "Other user endpoints"). Views only read and serialize."""

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from config.errors import error_responses

from .selectors import referral_summary
from .serializers import ReferralSummarySerializer


class ReferralSummaryApi(APIView):
    @extend_schema(
        operation_id="user_referrals",
        responses={
            200: ReferralSummarySerializer,
            **error_responses(401, s401="not_authenticated, authentication_failed"),
        },
        tags=["referrals"],
        summary="Your invite code, its share link, and what inviting has earned you.",
    )
    def get(self, request: Request) -> Response:
        user = request.user
        assert isinstance(user, User)  # IsAuthenticated (the default) let only users in
        return Response(ReferralSummarySerializer(asdict(referral_summary(user=user))).data)
