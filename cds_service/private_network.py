"""Private Network Access: let a public https page (the CDS Hooks Sandbox) call va-cds on loopback.

Chrome sends a CORS preflight with `Access-Control-Request-Private-Network: true` before a public page may
reach a private or loopback address, and goes on only when the answer carries
`Access-Control-Allow-Private-Network: true`. Starlette's CORS middleware does not know the header, so this
middleware sits outside it and adds the header to preflight answers that CORS approved (those with
`Access-Control-Allow-Origin`): an origin CORS refuses gets no private-network grant either.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_REQUEST = b"access-control-request-private-network"
_ALLOW_ORIGIN = b"access-control-allow-origin"
_GRANT = (b"access-control-allow-private-network", b"true")


class PrivateNetworkAccess:
    """ASGI middleware; install it after (outside) CORSMiddleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS" or not _asks(scope):
            await self.app(scope, receive, send)
            return

        async def grant(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if any(name.lower() == _ALLOW_ORIGIN for name, _ in headers):
                    message = {**message, "headers": [*headers, _GRANT]}
            await send(message)

        await self.app(scope, receive, grant)


def _asks(scope: Scope) -> bool:
    return any(
        name.lower() == _REQUEST and value.strip().lower() == b"true" for name, value in scope["headers"]
    )
