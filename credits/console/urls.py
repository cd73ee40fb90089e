"""The console's pages, mounted at the top level by config/urls.py. The first group are the
addresses the service itself sends people to (DASHBOARD_URL's default is this service): the
invite share link, the mailed links, and Stripe's Checkout return page."""

from django.urls import path

from . import account_pages, notification_pages, pages, topup_pages

urlpatterns = [
    path("register", account_pages.register_page, name="console-register"),
    path("verify-email", account_pages.verify_email_page, name="verify-email-page"),
    path("reset-password", account_pages.reset_password_page, name="reset-password-page"),
    path("purchases/<str:purchase_id>", pages.purchase_page, name="console-purchase"),
    path("settings/auto-topup", topup_pages.setup_return, name="console-setup-return"),
    path("login", account_pages.login_page, name="console-login"),
    path("logout", account_pages.logout_page, name="console-logout"),
    path("forgot-password", account_pages.forgot_password_page, name="console-forgot-password"),
    path("my-credits", pages.overview_page, name="my-credits"),
    path("my-credits/live", pages.live_figures, name="console-live"),
    path("my-credits/keys", pages.keys_page, name="console-keys"),
    path("my-credits/keys/new", pages.key_create_action, name="console-key-create"),
    path("my-credits/keys/<str:key_id>", pages.key_update_action, name="console-key-update"),
    path("my-credits/keys/<str:key_id>/rotate", pages.key_rotate_action, name="console-key-rotate"),
    path("my-credits/keys/<str:key_id>/revoke", pages.key_revoke_action, name="console-key-revoke"),
    path("my-credits/buy", pages.buy_page, name="console-buy"),
    path("my-credits/buy/checkout", pages.buy_action, name="console-buy-checkout"),
    path("my-credits/activity", pages.activity_page, name="console-activity"),
    path("my-credits/account", account_pages.account_page, name="console-account"),
    path(
        "my-credits/account/password",
        account_pages.password_change_action,
        name="console-password",
    ),
    path("my-credits/account/email", account_pages.email_change_action, name="console-email"),
    path(
        "my-credits/account/verify",
        account_pages.verification_resend_action,
        name="console-verify-resend",
    ),
    path("my-credits/account/limit", account_pages.monthly_limit_action, name="console-limit"),
    path("my-credits/account/delete", account_pages.delete_account_action, name="console-delete"),
    path(
        "my-credits/notifications",
        notification_pages.notifications_page,
        name="console-notifications",
    ),
    path(
        "my-credits/notifications/settings",
        notification_pages.notification_settings_action,
        name="console-notification-settings",
    ),
    path(
        "my-credits/webhooks/new",
        notification_pages.webhook_create_action,
        name="console-webhook-new",
    ),
    path(
        "my-credits/webhooks/<str:endpoint_id>",
        notification_pages.webhook_page,
        name="console-webhook",
    ),
    path(
        "my-credits/webhooks/<str:endpoint_id>/test",
        notification_pages.webhook_test_action,
        name="console-webhook-test",
    ),
    path(
        "my-credits/webhooks/<str:endpoint_id>/delete",
        notification_pages.webhook_delete_action,
        name="console-webhook-delete",
    ),
    path("my-credits/auto-topup", topup_pages.auto_topup_page, name="console-auto-topup"),
    path(
        "my-credits/auto-topup/save", topup_pages.auto_topup_action, name="console-auto-topup-save"
    ),
    path("my-credits/auto-topup/card", topup_pages.card_add_action, name="console-card-add"),
    path(
        "my-credits/auto-topup/card/remove",
        topup_pages.card_remove_action,
        name="console-card-remove",
    ),
    path("my-credits/<slug:slug>", pages.panel_page, name="console-panel"),
]
