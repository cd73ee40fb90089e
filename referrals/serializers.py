from typing import Any

from rest_framework import serializers


class ReferralSummarySerializer(serializers.Serializer[Any]):
    invite_code = serializers.CharField(help_text="The user's invite code (upper-case).")
    share_url = serializers.URLField(help_text="The dashboard's registration link with the code.")
    registered = serializers.IntegerField(help_text="Users who registered with the code.")
    paid = serializers.IntegerField(
        help_text="Invited users whose first payment stands (not refunded in full or disputed)."
    )
    credits_earned = serializers.IntegerField(
        help_text="Referral rewards granted, minus those clawed back."
    )
