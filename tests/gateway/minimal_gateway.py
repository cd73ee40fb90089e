"""A minimal API gateway and a stub model, for the end-to-end tests.

The gateway does exactly what CONTRACT.md asks of the real one: for every end-user request it
calls `POST /internal/v1/authorize` (the key from `Authorization: Bearer` on the OpenAI-style
endpoint, from `X-API-Key` on the Anthropic-style one), answers a denial with the decision's
`status`, `error` and `headers` as they are, forwards an allowed request to the model, settles
it (`success` with the usage, or `failure` with the reason), and copies the decision's headers
onto its answer. A 5xx or no answer from the billing service within its time budget is a 503.
"""

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

# CONTRACT.md suggests 250 ms in production; the test machine runs the whole suite beside
# other work, so the tests allow a little more before calling it "no answer".
AUTHORIZE_TIMEOUT = 1.0
SETTLE_TIMEOUT = 2.0


class _JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet tests

    def read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)


class StubModel(_JsonHandler):
    """Answers like the model would; `"fail"` in the last message makes it answer 500."""

    def do_POST(self) -> None:
        body = self.read_json()
        text = str(body.get("messages", [{}])[-1].get("content", ""))
        if "fail" in text:
            self.answer(500, {"error": {"message": "upstream broke", "type": "server_error"}})
            return
        if self.path.endswith("/chat/completions"):
            self.answer(
                200,
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": 1764000000,
                    "model": body.get("model", "kimi-k2-0905"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "Hello from the stub."},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
                },
            )
        else:
            self.answer(
                200,
                {
                    "id": "msg_stub",
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model", "kimi-k2-0905"),
                    "content": [{"type": "text", "text": "Hello from the stub."}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 12, "output_tokens": 5},
                },
            )


class MinimalGateway(_JsonHandler):
    billing_url = ""
    model_url = ""
    service_token = ""

    def do_POST(self) -> None:
        if self.path == "/v1/chat/completions":
            fmt, api_key = "openai", self._bearer()
        elif self.path == "/v1/messages":
            # X-API-Key is the documented header; recent Anthropic SDKs send the key as a
            # bearer token instead, so the gateway accepts both.
            fmt, api_key = "anthropic", self.headers.get("X-API-Key") or self._bearer()
        else:
            self.answer(404, {"error": {"message": "not found"}})
            return
        body = self.read_json()
        request_id = f"gw_{uuid.uuid4().hex}"
        model = str(body.get("model", ""))
        internal = {"Authorization": f"Bearer {self.service_token}"}
        try:
            reply = httpx.post(
                f"{self.billing_url}/internal/v1/authorize",
                json={"api_key": api_key, "request_id": request_id, "model": model, "format": fmt},
                headers=internal,
                timeout=AUTHORIZE_TIMEOUT,
            )
        except httpx.HTTPError:
            reply = None
        if reply is None or reply.status_code != 200:
            self.answer(503, {"error": {"message": "Billing is unavailable; try again."}})
            return
        decision = reply.json()
        if not decision["allowed"]:
            self.answer(decision["status"], decision["error"], decision["headers"])
            return
        upstream = httpx.post(f"{self.model_url}{self.path}", json=body, timeout=10)
        if upstream.status_code == 200:
            answer = upstream.json()
            usage = answer.get("usage", {})
            settle = {
                "request_id": request_id,
                "outcome": "success",
                "http_status": 200,
                "model": model,
                "usage": {
                    "prompt_tokens": usage.get("prompt_tokens", usage.get("input_tokens", 0)),
                    "completion_tokens": usage.get(
                        "completion_tokens", usage.get("output_tokens", 0)
                    ),
                },
                "reason": None,
            }
        else:
            answer = (
                {"error": {"message": "The model failed.", "type": "server_error"}}
                if fmt == "openai"
                else {
                    "type": "error",
                    "error": {"type": "api_error", "message": "The model failed."},
                }
            )
            settle = {
                "request_id": request_id,
                "outcome": "failure",
                "http_status": upstream.status_code,
                "model": model,
                "reason": "upstream_error",
            }
        httpx.post(
            f"{self.billing_url}/internal/v1/settle",
            json=settle,
            headers=internal,
            timeout=SETTLE_TIMEOUT,
        ).raise_for_status()
        status = 200 if upstream.status_code == 200 else 502
        self.answer(status, answer, decision["headers"])

    def _bearer(self) -> str:
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else ""


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host!s}:{port}"


@contextmanager
def running_gateway(billing_url: str, service_token: str) -> Iterator[str]:
    """Start the stub model and the gateway on loopback; yields the gateway's root URL."""
    model_server, model_url = _serve(StubModel)
    handler = type(
        "ConfiguredGateway",
        (MinimalGateway,),
        {"billing_url": billing_url, "model_url": model_url, "service_token": service_token},
    )
    gateway_server, gateway_url = _serve(handler)
    try:
        yield gateway_url
    finally:
        gateway_server.shutdown()
        model_server.shutdown()
        gateway_server.server_close()
        model_server.server_close()
