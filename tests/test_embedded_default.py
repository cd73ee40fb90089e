"""The embedded default, end to end: SQLite on a temporary file, no Redis, no broker, the
service under gunicorn with DEBUG off in a child process, driven over real HTTP.

This runs in the normal suite (and in CI) so that the zero-dependency set-up the README
promises cannot rot unnoticed."""

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.embedded import embedded_env

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    return embedded_env(
        tmp_path,
        debug=False,
        SECRET_KEY="embedded-default-test-key",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
    )


class Http:
    def __init__(self, base: str, env: dict[str, str], log: Path | None = None) -> None:
        self.base = base
        self.env = env  # the server's environment (its SQLite file), for manage.py commands
        self.headers: dict[str, str] = {}
        self.log = log  # the server's output: console email lands there

    def verification_token(self, email: str) -> str:
        """The token of the newest verification link mailed to `email`, read from the server's
        output (the console backend's dump of the message), as a developer reads it from their
        terminal."""
        assert self.log is not None
        deadline = time.monotonic() + 10
        tokens: list[str] = []
        while not tokens and time.monotonic() < deadline:
            output = self.log.read_text()
            # The message to this address, in the console backend's dump of it.
            after = output[output.rfind(f"To: {email}") :] if f"To: {email}" in output else ""
            tokens = re.findall(r"/verify-email\?token=([A-Za-z0-9_:\-]+)", after)
            time.sleep(0.1)
        assert tokens, f"no verification link to {email} in the console output"
        return tokens[0]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        request.add_header("Content-Type", "application/json")
        for name, value in self.headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                raw, status, ctype = (
                    response.read(),
                    response.status,
                    response.headers.get("Content-Type", ""),
                )
        except urllib.error.HTTPError as exc:
            raw, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        parsed = json.loads(raw) if raw and ctype.startswith("application/json") else raw
        return status, parsed, ctype


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    tmp_path = tmp_path_factory.mktemp("embedded")
    env = _embedded_env(tmp_path)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert migrate.returncode == 0, f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}"
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "60",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    http = Http(f"http://127.0.0.1:{port}", env, log=tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.call("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "the embedded server did not come up:\n" + (tmp_path / "server.log").read_text()
                )
            time.sleep(0.2)
        yield http
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_the_embedded_default_walks_register_login_keys_and_revoke(server: Http) -> None:
    status, health, _ = server.call("GET", "/healthz")
    assert (status, health) == (200, {"status": "ok", "checks": {"database": "ok"}})

    email, password = "embedded@example.com", "a-long and unusual passphrase 42"
    status, body, _ = server.call(
        "POST", "/api/auth/register", {"email": email, "password": password}
    )
    assert status == 201, body
    assert body["user"]["email"] == email

    status, body, _ = server.call("POST", "/api/auth/login", {"email": email, "password": password})
    assert status == 200, body
    server.headers["Authorization"] = f"Token {body['token']}"

    status, created, _ = server.call("POST", "/api/user/keys", {"name": "embedded"})
    assert status == 201, created
    assert created["key"].startswith("sk-kimi-")

    status, listed, _ = server.call("GET", "/api/user/keys")
    assert status == 200
    assert [key["id"] for key in listed] == [created["id"]]

    status, _, _ = server.call("DELETE", f"/api/user/keys/{created['id']}")
    assert status == 204
    status, listed, _ = server.call("GET", "/api/user/keys")
    assert (status, listed) == (200, [])

    status, _, _ = server.call("POST", "/api/auth/logout")
    assert status == 204
    status, body, _ = server.call("GET", "/api/user/keys")
    assert status == 401
    assert body["error"]["code"] == "authentication_failed"  # the token no longer exists


# The line of the README's walk where a reader pastes the token from the server's terminal.
PASTE_TOKEN = "VERIFY='paste the token here'"


def readme_walk() -> tuple[str, str]:
    """The README's curl walk, as a reader copies it: the part up to the verification mail and
    the part after it (which starts where the reader pastes the token)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- curl-walk:start -->", 1)[1].split("<!-- curl-walk:end -->", 1)[0]
    before, after = block.split("<!-- curl-walk:verify -->", 1)
    return tuple(  # type: ignore[return-value]
        part.split("```sh", 1)[1].split("```", 1)[0].strip() for part in (before, after)
    )


def test_the_readmes_curl_walk_runs_as_written(server: Http) -> None:
    register, rest = readme_walk()
    assert "BASE=http://127.0.0.1:8000" in register
    assert rest.startswith(PASTE_TOKEN)

    def run(script: str) -> list[str]:
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.replace(".venv/bin/python", sys.executable)],
            cwd=ROOT,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    # Only where the server listens, which Python runs manage.py and the token a reader copies
    # from the server's terminal differ from a reader's. The reader pastes the second part into
    # the same shell (BASE is set there already); this one is a new shell.
    base = f"BASE={server.base}"
    printed = run(register.replace("BASE=http://127.0.0.1:8000", base))
    registered = json.loads(printed[0])["user"]
    assert (registered["email"], registered["email_verified"]) == ("ada@example.com", False)
    token = server.verification_token("ada@example.com")
    printed = run(base + "\n" + rest.replace(PASTE_TOKEN, f"VERIFY='{token}'"))
    verified = json.loads(printed[0])["user"]
    assert (verified["email"], verified["email_verified"]) == ("ada@example.com", True)
    authorized = json.loads(printed[1])
    assert (authorized["allowed"], authorized["credits_remaining"]) == (True, 99)
    assert json.loads(printed[2]) == {"request_id": "req_1", "charged": 1, "credits_remaining": 99}
    assert printed[3:] == ["99"]


def test_the_embedded_default_serves_the_schema_and_static_files_with_debug_off(
    server: Http,
) -> None:
    server.headers.clear()
    status, schema, ctype = server.call("GET", "/api/schema/")
    assert (status, ctype.split(";")[0]) == (200, "application/json")
    assert "/api/user/keys" in schema["paths"]
    status, _, ctype = server.call("GET", "/static/admin/css/base.css")
    assert (status, ctype.split(";")[0]) == (200, "text/css")


@pytest.mark.parametrize("prefix", ["p" * 25, "sk kimi-", "sk-\x07-", "ключ-"])
def test_an_api_key_prefix_that_keys_cannot_carry_stops_the_process(
    tmp_path: Path, prefix: str
) -> None:
    # Past 24 characters every new key would be a 500 (the shown prefix is stored in 32) and
    # never recognised; keys travel in HTTP headers, which carry printable ASCII.
    env = {**_embedded_env(tmp_path), "API_KEY_PREFIX": prefix}
    check = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode != 0
    assert "API_KEY_PREFIX must be 1 to 24 printable ASCII characters" in check.stderr


def test_the_embedded_default_walks_register_verify_key_and_authorize(server: Http) -> None:
    """Mail goes to the console (EMAIL_URL's default `console:`): the verification link is read
    from the server's output, as a developer would read it from their terminal."""
    server.headers.clear()
    email, password = "verify.me@example.com", "a-long and unusual passphrase 42"
    status, body, _ = server.call(
        "POST", "/api/auth/register", {"email": email, "password": password}
    )
    assert status == 201, body
    assert body["user"]["email_verified"] is False

    token = server.verification_token(email)
    status, body, _ = server.call("POST", "/api/auth/verify-email", {"token": token})
    assert status == 200, body
    assert body["user"]["email_verified"] is True

    status, body, _ = server.call("POST", "/api/auth/login", {"email": email, "password": password})
    assert status == 200, body
    server.headers["Authorization"] = f"Token {body['token']}"
    status, created, _ = server.call("POST", "/api/user/keys", {"name": "verified"})
    assert status == 201, created

    made = subprocess.run(
        [sys.executable, "manage.py", "create_service_token", "embedded-gateway"],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    server.headers["Authorization"] = f"Bearer {made.stdout.strip()}"
    status, decision, _ = server.call(
        "POST",
        "/internal/v1/authorize",
        {
            "api_key": created["key"],
            "request_id": "req_embedded_1",
            "model": "kimi-k2-0905",
            "format": "openai",
        },
    )
    assert status == 200, decision
    assert decision["allowed"] is True, decision
    assert decision["credits_remaining"] == 99  # the signup grant, minus this hold
    server.headers.clear()
