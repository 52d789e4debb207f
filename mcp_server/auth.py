"""Bearer tokens for the streamable HTTP transport: the ones in the database (``imagegate mcp
token USER``, Discord's ``/imagegate token``; minted and revoked while the server runs) and the
``[[mcp.clients]]`` of the config.

No token is stored in clear. A config token is hashed and compared in constant time with every
configured digest (no early exit), so timing tells an attacker nothing about which digest came
close; a database token is checked by ``ImageService.verify_token`` the same way.
"""

from __future__ import annotations

import hashlib
import hmac

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from starlette.authentication import AuthCredentials
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from core import ImageService, Settings

MAX_TOKEN_CHARS = 512


class ClientTokenVerifier:
    """The SDK's ``TokenVerifier``: a valid token maps to its user's key (``mcp:alice``,
    ``discord:1234``). ``service`` (set once it is open) checks the database's tokens."""

    def __init__(self, settings: Settings, service: ImageService | None = None) -> None:
        self._clients = [(c.user, c.token_sha256.lower()) for c in settings.mcp.clients]
        self.service = service

    async def verify_token(self, token: str) -> AccessToken | None:
        """The access info of the token's user, or None."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        user = None
        for client_user, expected in self._clients:
            if hmac.compare_digest(digest, expected):
                user = f"mcp:{client_user}"
        if user is None and self.service is not None:
            stored = await self.service.verify_token("mcp", token)
            user = stored.user if stored is not None else None
        if user is None:
            return None
        return AccessToken(token=token, client_id=user, scopes=[], subject=user)


class OptionalBearer:
    """ASGI middleware for tokenless HTTP (loopback, no tokens when it started): a request that
    brings a bearer token is served as that token's user, and refused (401) when the token is
    not valid; one without is left to the tokenless rules. So a token minted after the start
    works at once, without a restart."""

    def __init__(self, app: ASGIApp, verifier: ClientTokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = _authorization(scope) if scope["type"] == "http" else None
        if header is not None:
            kind, _, token = header.partition(" ")
            access = await self.verifier.verify_token(token.strip())
            if kind.lower() != "bearer" or access is None:
                refusal = PlainTextResponse(
                    "invalid bearer token", 401, headers={"WWW-Authenticate": "Bearer"}
                )
                await refusal(scope, receive, send)
                return
            scope = {**scope, "user": AuthenticatedUser(access), "auth": AuthCredentials([])}
        await self.app(scope, receive, send)


def _authorization(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            return value.decode("latin-1")
    return None


def auth_settings() -> AuthSettings:
    """Resource-server settings for static tokens. The issuer is required by the SDK but never
    advertised: with no ``resource_server_url`` there is no OAuth metadata to discover."""
    return AuthSettings(
        issuer_url="http://localhost",  # type: ignore[arg-type]
        resource_server_url=None,
        required_scopes=[],
    )
