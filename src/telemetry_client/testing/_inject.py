"""``FaultMiddleware``: pure ASGI, fails requests the way ``FaultInjection`` says."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry_client.testing._faults import Fault

__all__ = ["Decision", "FaultMiddleware", "InjectedDisconnect"]

Decision = tuple[float, Fault | None, int | None]
"""What to do with one request: seconds to wait, the fault if any, Retry-After seconds."""

_ERRORS = {
    Fault.UNAVAILABLE: (503, "injected fault: Telemetry is unavailable"),
    Fault.RATE_LIMITED: (429, "injected fault: too many requests"),
    Fault.SERVER_ERROR: (500, "injected fault: internal server error"),
}


class InjectedDisconnect(httpx.RemoteProtocolError):
    """Breaks the connection half-way through an answer, on purpose.

    Under a real server the connection is closed and the client reads a truncated body (a
    protocol error); under ``httpx.ASGITransport`` the client receives this exception itself,
    which is the same ``httpx.RemoteProtocolError`` a real broken connection gives.
    """


class FaultMiddleware:
    """Delays or fails requests as ``decide(path)`` says, before or after the app handles them."""

    def __init__(self, app: ASGIApp, *, decide: Callable[[str], Decision]) -> None:
        self.app = app
        self.decide = decide

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        delay, fault, retry_after = self.decide(scope["path"])
        if delay:
            await anyio.sleep(delay)
        if fault in _ERRORS:
            status, message = _ERRORS[fault]
            headers = [(b"content-type", b"application/json")]
            if retry_after is not None and status in (429, 503):
                headers.append((b"retry-after", str(retry_after).encode()))
            body = json.dumps({"error": message, "errors": []}).encode()
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if fault is Fault.STORED_THEN_CLOSED:
            send = _breaking(send, scope["path"])
        await self.app(scope, receive, send)


def _breaking(send: Send, path: str) -> Send:
    async def send_half_then_break(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body: bytes = message.get("body", b"")
        # The Content-Length announced the whole body: the client is left waiting for the rest.
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
        raise InjectedDisconnect(
            f"injected fault: connection closed after the request to {path} was handled"
        )

    return send_half_then_break
