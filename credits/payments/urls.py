from django.urls import path

from . import views

urlpatterns = [
    path("packages", views.PackageListView.as_view(), name="package-list"),
    path("purchases", views.PurchaseListCreateView.as_view(), name="purchase-list"),
    path("user/payment-method", views.PaymentMethodView.as_view(), name="payment-method"),
    path("user/auto-topup", views.AutoTopupView.as_view(), name="auto-topup"),
    path("webhooks/stripe", views.StripeWebhookView.as_view(), name="stripe-webhook"),
]
