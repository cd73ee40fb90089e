"""Sign up, log in and out, the mailed links (verify the address, reset the password), and the
account page (password, address, monthly limit, deletion). Each view validates the form, calls
the same accounts or ledger service the API view calls, and renders the outcome."""

from typing import Any

from django.contrib import messages
from django.contrib.auth import authenticate, logout
from django.contrib.auth.password_validation import password_validators_help_texts
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import serializers as account_serializers
from accounts.login_sessions import (
    login_session_current,
    login_session_end,
    login_session_password_changed,
    login_session_start,
)
from accounts.services import (
    email_change_request,
    email_verification_resend,
    email_verify,
    password_change,
    password_reset_confirm,
    password_reset_request,
    user_delete,
    user_register,
)
from accounts.throttles import (
    EmailChangeThrottle,
    LoginClientThrottle,
    LoginEmailThrottle,
    LoginThrottle,
    PasswordResetClientThrottle,
    PasswordResetEmailThrottle,
    SignupThrottle,
    VerifyResendThrottle,
)
from config.errors import ApplicationError
from credits import clock, services
from credits.models import CreditAccount
from credits.usage.views import LimitsInputSerializer

from .common import (
    console_user,
    form_request,
    login_required,
    page,
    throttled,
    throttled_message,
    validated,
)


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or "/my-credits"
    # Only this site's own paths: an open redirect would make the login page a phishing aid.
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return "/my-credits"
    return target


@require_http_methods(["GET", "POST"])
def login_page(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {"next": _next_url(request), "email": ""}
    if request.method == "POST":
        email = request.POST.get("email", "").strip()
        context["email"] = email
        wait = throttled(request, [LoginThrottle, LoginEmailThrottle, LoginClientThrottle])
        if wait is not None:
            context["error"] = throttled_message(wait)
            return render(request, "console/login.html", context, status=429)
        user = authenticate(request, username=email, password=request.POST.get("password", ""))
        if user is None:  # unknown email, wrong password and inactive user look alike
            context["error"] = "Email or password is incorrect."
            return render(request, "console/login.html", context, status=400)
        login_session_start(request=request, user=user, with_token=False)
        return redirect(context["next"])
    return render(request, "console/login.html", context)


@require_POST
def logout_page(request: HttpRequest) -> HttpResponse:
    current = login_session_current(request=request, auth=None)
    if current is not None:
        login_session_end(login_session=current)
    logout(request)
    messages.info(request, "You are logged out.")
    return redirect("/login")


@require_http_methods(["GET", "POST"])
def register_page(request: HttpRequest) -> HttpResponse:
    """`/register?invite=CODE` is the invite share link: the code is filled in."""
    context: dict[str, Any] = {
        "email": request.POST.get("email", ""),
        "invite_code": request.POST.get("invite_code", request.GET.get("invite", "")),
        "errors": {},
        # The validators' own words, so the hint never drifts from what is enforced.
        "password_rules": password_validators_help_texts(),
    }
    if request.method == "POST":
        limit = SignupThrottle()
        # Checked, and counted only once the account exists (as the API does).
        if not limit.allow_request(form_request(request), None):
            context["errors"] = {"form": throttled_message(int(limit.wait() or 1))}
            return render(request, "console/register.html", context, status=429)
        data, errors = validated(
            account_serializers.RegisterInputSerializer,
            {
                "email": request.POST.get("email", ""),
                "password": request.POST.get("password", ""),
                "invite_code": request.POST.get("invite_code", ""),
            },
        )
        if data is not None:
            try:
                user = user_register(
                    email=data["email"],
                    password=data["password"],
                    invite_code=data["invite_code"] or "",
                )
            except ApplicationError as exc:
                errors = {exc.field or "form": exc.message}
            else:
                limit.record()
                login_session_start(request=request, user=user, with_token=False)
                messages.success(
                    request,
                    f"Welcome! We mailed a link to {user.email}: open it to verify your address "
                    "and receive your signup credits.",
                )
                return redirect("/my-credits")
        context["errors"] = errors
        return render(request, "console/register.html", context, status=400)
    return render(request, "console/register.html", context)


@require_GET
def verify_email_page(request: HttpRequest) -> HttpResponse:
    """The mailed link verifies on opening: the token proves the mailbox, verifying twice grants
    nothing twice (the service is idempotent), so a mail scanner opening it first does no harm."""
    try:
        user = email_verify(token=request.GET.get("token", ""))
    except ApplicationError as exc:
        context = {"ok": False, "message": exc.message}
        return render(request, "console/verify_email.html", context, status=400)
    return render(request, "console/verify_email.html", {"ok": True, "email": user.email})


@require_http_methods(["GET", "POST"])
def reset_password_page(request: HttpRequest) -> HttpResponse:
    token = request.POST.get("token") or request.GET.get("token", "")
    context: dict[str, Any] = {"token": token}
    if request.method == "POST":
        wait = throttled(request, [PasswordResetClientThrottle])
        if wait is not None:
            context.update(ok=False, message=throttled_message(wait))
            return render(request, "console/reset_password.html", context, status=429)
        data, errors = validated(
            account_serializers.PasswordResetConfirmInputSerializer,
            {"token": token, "password": request.POST.get("password", "")},
        )
        if data is None:
            context.update(ok=False, message=next(iter(errors.values())))
            return render(request, "console/reset_password.html", context, status=400)
        try:
            password_reset_confirm(token=data["token"], password=data["password"])
        except ApplicationError as exc:
            context.update(ok=False, message=exc.message)
            return render(request, "console/reset_password.html", context, status=400)
        context.update(ok=True, message="Your password is set: log in with it.")
    return render(request, "console/reset_password.html", context)


@require_http_methods(["GET", "POST"])
def forgot_password_page(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {"email": request.POST.get("email", "")}
    if request.method == "POST":
        wait = throttled(request, [PasswordResetClientThrottle, PasswordResetEmailThrottle])
        if wait is not None:
            context["error"] = throttled_message(wait)
            return render(request, "console/forgot_password.html", context, status=429)
        email = request.POST.get("email", "").strip()
        if not email:
            context["error"] = "Enter the address of your account."
            return render(request, "console/forgot_password.html", context, status=400)
        password_reset_request(email=email)
        # The same answer whether or not an account has this address.
        context["sent"] = "If an account has this address, a reset link is on its way."
    return render(request, "console/forgot_password.html", context)


# --- the account page ---------------------------------------------------------------------------


def _account_page(
    request: HttpRequest, *, errors: dict[str, dict[str, str]] | None = None, status: int = 200
) -> HttpResponse:
    user = console_user(request)
    account = CreditAccount.objects.filter(pk=user.pk).first()
    context = {
        "user": user,
        "monthly_credit_limit": account.monthly_credit_limit if account else None,
        "month_spent": (
            services.account_month_spent(account=account, now=clock.now()) if account else 0
        ),
        "errors": errors or {},
    }
    return page(request, "console/account.html", context, active="account", status=status)


@login_required
@require_GET
def account_page(request: HttpRequest) -> HttpResponse:
    return _account_page(request)


def _failed(request: HttpRequest, form: str, message: str, status: int = 400) -> HttpResponse:
    return _account_page(request, errors={form: {"form": message}}, status=status)


@login_required
@require_POST
def password_change_action(request: HttpRequest) -> HttpResponse:
    user = console_user(request)
    data, errors = validated(
        account_serializers.PasswordChangeInputSerializer,
        {
            "current_password": request.POST.get("current_password", ""),
            "new_password": request.POST.get("new_password", ""),
        },
    )
    if data is None:
        return _account_page(request, errors={"password": errors}, status=400)
    try:
        user = password_change(
            user=user,
            current_password=data["current_password"],
            new_password=data["new_password"],
            keep_token=None,
            keep_login=login_session_current(request=request, auth=None),
        )
    except ApplicationError as exc:
        return _failed(request, "password", exc.message)
    # The hash change ends every session; this login's carries on with the new hash.
    login_session_password_changed(request=request, user=user)
    messages.success(request, "Password changed; your other logins have ended.")
    return redirect("/my-credits/account")


@login_required
@require_POST
def email_change_action(request: HttpRequest) -> HttpResponse:
    wait = throttled(request, [EmailChangeThrottle])
    if wait is not None:
        return _failed(request, "email", throttled_message(wait), status=429)
    try:
        email_change_request(
            user=console_user(request),
            email=request.POST.get("email", ""),
            password=request.POST.get("password", ""),
        )
    except ApplicationError as exc:
        return _failed(request, "email", exc.message)
    messages.success(request, "Open the link we mailed to the new address to finish the change.")
    return redirect("/my-credits/account")


@login_required
@require_POST
def verification_resend_action(request: HttpRequest) -> HttpResponse:
    wait = throttled(request, [VerifyResendThrottle])
    if wait is not None:
        messages.error(request, throttled_message(wait))
    else:
        email_verification_resend(user=console_user(request))
        messages.success(request, "A new verification link is on its way.")
    back = "/my-credits/account" if request.POST.get("back") == "account" else "/my-credits"
    return redirect(back)


@login_required
@require_POST
def monthly_limit_action(request: HttpRequest) -> HttpResponse:
    raw = request.POST.get("monthly_credit_limit", "").replace(",", "").strip()
    data, errors = validated(LimitsInputSerializer, {"monthly_credit_limit": raw or None})
    if data is None:
        return _account_page(request, errors={"limit": errors}, status=400)
    user = console_user(request)
    assert user.pk is not None
    services.account_limit_set(user_id=user.pk, monthly_credit_limit=data["monthly_credit_limit"])
    messages.success(
        request,
        "Monthly limit removed."
        if data["monthly_credit_limit"] is None
        else f"Monthly limit set to {data['monthly_credit_limit']:,} credits.",
    )
    return redirect("/my-credits/account")


@login_required
@require_POST
def delete_account_action(request: HttpRequest) -> HttpResponse:
    if request.POST.get("confirm") != "yes":
        return _failed(request, "delete", "Tick the box to confirm that you want to delete it.")
    try:
        user_delete(user=console_user(request), password=request.POST.get("password", ""))
    except ApplicationError as exc:
        return _failed(request, "delete", exc.message)
    logout(request)
    messages.info(request, "Your account was deleted.")
    return redirect("/login")
