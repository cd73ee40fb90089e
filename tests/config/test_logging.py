"""The log lines, as the configured console handler writes them (settings.LOGGING): one line
per 4xx with the request's id, through the Django stack and the hot-path WSGI entry alike;
runserver's access line does not repeat it; JSON lines with `LOG_FORMAT=json`; and the embedded
default (no broker) logs no broker warning."""

import io
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from accounts.service_tokens import service_token_create
from config import observability
from tests.embedded import embedded_python
from tests.gateway.test_wsgi import call as hot_path_call

pytestmark = pytest.mark.django_db


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """What the real console handler writes (its formatter and filters), read back."""
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "console")
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield stream
    finally:
        handler.setStream(previous)


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/api/user/keys", None, 401),
        ("get", "/no/such/page", None, 404),
        ("post", "/api/auth/login", {"email": "x@example.com", "password": "wrong"}, 400),
    ],
)
def test_a_4xx_of_the_django_stack_is_one_line_carrying_its_request_id(
    console: io.StringIO, method: str, path: str, body: Any, status: int
) -> None:
    client = Client()
    kwargs: dict[str, Any] = {"HTTP_X_REQUEST_ID": "dash-4xx-1"}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    written = lines(console)
    assert len(written) == 1, written
    assert "level=WARNING logger=django.request request_id=dash-4xx-1 " in written[0]
    assert path in written[0]


def _gateway_400(entry: str, token: str) -> int:
    body = {"request_id": "req-400-log", "outcome": "perhaps"}
    if entry == "django":
        return (
            Client(HTTP_AUTHORIZATION=f"Bearer {token}")
            .post("/internal/v1/settle", json.dumps(body), content_type="application/json")
            .status_code
        )
    status, _, _ = hot_path_call("/internal/v1/settle", body, token)
    return int(status.split()[0])


@pytest.mark.parametrize("entry", ["django", "hot-path"])
def test_a_gateway_4xx_is_one_line_with_the_gateways_request_id(
    console: io.StringIO, entry: str
) -> None:
    _, token = service_token_create(name=f"gw-{entry}")
    assert _gateway_400(entry, token) == 400
    written = lines(console)
    assert written == [
        written[0].split(" level=")[0]
        + " level=WARNING logger=django.request request_id=req-400-log "
        "Bad Request: /internal/v1/settle (invalid_request)"
    ], written


def test_a_refused_service_token_is_one_line_too(console: io.StringIO) -> None:
    assert _gateway_400("django", "svc-nonsense") == 401
    written = lines(console)
    assert len(written) == 1, written
    assert "Unauthorized: /internal/v1/settle (invalid_service_token)" in written[0]


def test_runservers_access_line_of_a_4xx_is_dropped_and_others_kept() -> None:
    keep = observability.OneLinePer4xxFilter()

    def record(status: int) -> logging.LogRecord:
        made = logging.LogRecord(
            "django.server", logging.INFO, "", 0, '"GET /" %s', (status,), None
        )
        made.status_code = status
        return made

    assert [keep.filter(record(s)) for s in (200, 302, 401, 404, 499, 500)] == [
        True,
        True,
        False,
        False,
        False,
        True,
    ]


def _embedded(tmp_path: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return embedded_python(tmp_path, "import django; django.setup()\n" + script, **env)


def test_the_embedded_default_runs_a_task_without_a_broker_warning(tmp_path: Path) -> None:
    out = _embedded(
        tmp_path,
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from credits.tasks import sweep_expired\n"
        "print(sweep_expired.delay().get())\n",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert "level=WARNING" not in out.stderr, out.stderr
    assert "No hostname was supplied" not in out.stderr


def test_log_format_json_writes_one_json_object_per_line(tmp_path: Path) -> None:
    out = _embedded(
        tmp_path,
        "import logging\n"
        "from config import observability\n"
        "observability.bind_request_id('req-json-1')\n"
        "logging.getLogger('credits.example').warning('held %s credits', 3)\n",
        LOG_FORMAT="json",
    )
    assert out.returncode == 0, out.stderr
    written = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    assert len(written) == 1, out.stderr
    assert written[0]["level"] == "WARNING"
    assert written[0]["logger"] == "credits.example"
    assert written[0]["request_id"] == "req-json-1"
    assert written[0]["message"] == "held 3 credits"
    assert written[0]["time"]


def test_an_unknown_log_format_stops_the_process_naming_the_variable(tmp_path: Path) -> None:
    out = _embedded(tmp_path, "", LOG_FORMAT="xml")
    assert out.returncode != 0
    assert "LOG_FORMAT must be 'plain' or 'json'" in out.stderr
