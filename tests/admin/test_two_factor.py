"""Two-factor login for the admin: with `ADMIN_REQUIRE_2FA` on, a password alone is refused,
a TOTP code or a single-use recovery code lets staff in, and a session no device verified is
not staff. The suite's other admin tests run with it off (config/test_settings.py)."""

import os
import subprocess
import sys
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django_otp.models import Device
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django.live_server_helper import LiveServer

from accounts.two_factor import Enrolment, staff_two_factor_enrol

from .conftest import PASSWORD, chromium, staff_user

pytestmark = pytest.mark.django_db

EMAIL = "ops@example.com"


@pytest.fixture
def required(settings: Any) -> None:
    settings.ADMIN_REQUIRE_2FA = True


def enrolled() -> Enrolment:
    return staff_two_factor_enrol(user=staff_user(EMAIL, "accounts.view_user"))


def current_code() -> str:
    device = TOTPDevice.objects.get(user__email=EMAIL)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def device_id(model: type[Device] = TOTPDevice) -> str:
    """The value of the login form's device choice (django-otp asks which device the code
    is from, so that a wrong guess counts against that device only)."""
    return str(model.objects.get(user__email=EMAIL).persistent_id)


def log_in(client: Client, code: str | None, device: str = "") -> Any:
    form = {"username": EMAIL, "password": PASSWORD, "next": "/admin/"}
    if code is not None:
        form["otp_token"] = code
        form["otp_device"] = device or device_id()
    return client.post("/admin/login/?next=/admin/", form)


def test_a_password_alone_is_refused_when_required(required: None) -> None:
    enrolled()
    client = Client()
    response = log_in(client, None)
    assert response.status_code == 200  # the form again, with its error
    assert b"errornote" in response.content
    assert client.get("/admin/").status_code == 302


def test_a_wrong_code_is_refused(required: None) -> None:
    enrolled()
    client = Client()
    code = current_code()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert log_in(client, wrong).status_code == 200
    assert client.get("/admin/").status_code == 302


def test_a_totp_code_lets_staff_in(required: None) -> None:
    enrolled()
    client = Client()
    response = log_in(client, current_code())
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_session_logged_in_without_a_device_is_not_staff(required: None) -> None:
    client = Client()
    client.force_login(staff_user(EMAIL, "accounts.view_user"))
    assert client.get("/admin/accounts/user/").status_code == 302


def test_staff_without_a_device_cannot_log_in(required: None) -> None:
    staff_user(EMAIL, "accounts.view_user")
    client = Client()
    assert log_in(client, "123456", device="otp_totp.totpdevice/1").status_code == 200
    assert client.get("/admin/").status_code == 302


def test_a_recovery_code_works_once(required: None) -> None:
    code = enrolled().recovery_codes[0]
    first = Client()
    assert log_in(first, code, device_id(StaticDevice)).status_code == 302
    assert first.get("/admin/").status_code == 200
    again = Client()
    assert log_in(again, code, device_id(StaticDevice)).status_code == 200
    assert again.get("/admin/").status_code == 302


def test_without_the_requirement_a_password_is_enough(settings: Any) -> None:
    settings.ADMIN_REQUIRE_2FA = False
    staff_user(EMAIL, "accounts.view_user")
    client = Client()
    assert log_in(client, None).status_code == 302
    assert client.get("/admin/").status_code == 200


@pytest.mark.parametrize(("debug", "expected"), [("0", "True"), ("1", "False")])
def test_the_requirement_is_on_unless_debug(debug: str, expected: str) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ADMIN_REQUIRE_2FA", "DJANGO_SETTINGS_MODULE")
    }
    env.update(DEBUG=debug, SECRET_KEY="x" * 50)
    out = subprocess.run(
        [sys.executable, "-c", "import config.settings as s; print(s.ADMIN_REQUIRE_2FA)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_the_enrol_command_prints_the_url_and_ten_recovery_codes() -> None:
    staff_user(EMAIL)
    out = StringIO()
    call_command("staff_2fa_enrol", EMAIL, stdout=out, stderr=StringIO())
    lines = out.getvalue().split()
    assert lines[0].startswith("otpauth://totp/")
    assert len(lines[1:]) == 10
    assert TOTPDevice.objects.filter(user__email=EMAIL, confirmed=True).count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_staff_log_in_with_a_totp_code_in_the_browser(
    live_server: LiveServer, settings: Any
) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    enrolled()
    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{live_server.url}/admin/")
        page.fill("#id_username", EMAIL)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit][value='Log in']")
        page.wait_for_selector(".errornote")  # no code: refused
        assert page.url.startswith(f"{live_server.url}/admin/login/")
        page.fill("#id_password", PASSWORD)
        page.select_option("#id_otp_device", label="authenticator")
        page.fill("#id_otp_token", current_code_outside_the_loop())
        page.click("input[type=submit][value='Log in']")
        page.wait_for_selector("#user-tools")
        assert page.url == f"{live_server.url}/admin/"
    assert errors == []


def current_code_outside_the_loop() -> str:
    """Playwright's sync API runs an event loop in this thread, during which Django refuses
    database calls: read the device from another thread."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def read() -> str:
        try:
            return current_code()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(read).result()
