from django.urls import path

from .views import ReferralSummaryApi

urlpatterns = [
    path("user/referrals", ReferralSummaryApi.as_view(), name="user-referrals"),
]
