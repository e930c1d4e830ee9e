"""The server's front gate, an ASGI middleware: the bearer token, the body size limit and the body deadline.

Every request but `/health` must carry `Authorization: Bearer <token>` when the server has a token. The body is
read here in full, within `body_timeout_s` and `max_body_bytes`, before the application sees it: a client that
declares more than it sends, or trickles, gets a 408 and its connection closed, and a body over the limit a 413;
a client that disconnects mid-body is dropped quietly (no traceback).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable

OPEN_PATHS = ("/health",)  # answered without the token (load balancers probe them)
MAX_DETAIL = 400  # characters of an error's detail: error bodies stay short whatever the request held

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def short(text: str) -> str:
    """`text` cut to MAX_DETAIL characters."""
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 1] + "…"


async def reply(send: Send, status: int, detail: str, headers: dict[str, str] | None = None,
                close: bool = False) -> None:
    """Send a JSON error response {"detail": ...} (and ask to close the connection when `close`)."""
    body = json.dumps({"detail": short(detail)}).encode()
    head = {"content-type": "application/json", "content-length": str(len(body)), **(headers or {})}
    if close:
        head["connection"] = "close"
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head.items()]})
    await send({"type": "http.response.body", "body": body})


class _Disconnected(Exception):
    pass


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: token check, then the whole body read within a deadline and a size limit."""

    def __init__(self, app: Callable, *, token: str | None, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app, self.token = app, token
        self.max_body_bytes, self.body_timeout_s = max_body_bytes, body_timeout_s

    def authorised(self, scope: Scope) -> bool:
        """Whether the request may pass: no token set, an open path, or the right bearer token."""
        if not self.token or scope["path"] in OPEN_PATHS:
            return True
        headers = dict(scope.get("headers") or [])
        scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.authorised(scope):
            await reply(send, 401, "this server needs a bearer token: send the header 'Authorization: Bearer "
                                   "<token>' with the token it was started with.",
                        {"www-authenticate": "Bearer"})
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await reply(send, 413, f"the body has {int(declared)} bytes, over this server's limit of "
                                   f"{self.max_body_bytes}; send fewer inputs per request.", close=True)
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.body_timeout_s)
        except TimeoutError:
            await reply(send, 408, f"the request body did not arrive within {self.body_timeout_s:g} s; send the "
                                   "whole body at once, as many bytes as Content-Length says.", close=True)
            return
        except _TooLarge:
            await reply(send, 413, f"the body is over this server's limit of {self.max_body_bytes} bytes; send "
                                   "fewer inputs per request.", close=True)
            return
        except _Disconnected:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                raise _TooLarge
            if not message.get("more_body", False):
                return bytes(body)
