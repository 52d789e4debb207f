"""Bearer tokens for the streamable HTTP transport, checked against ``[[mcp.clients]]``.

Tokens are never stored: the config holds ``token_sha256`` and each request's token is hashed
and compared in constant time with every configured digest (no early exit), so timing tells
an attacker nothing about which digest came close.
"""

from __future__ import annotations

import hashlib
import hmac

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from core import Settings

MAX_TOKEN_CHARS = 512


class ClientTokenVerifier:
    """The SDK's ``TokenVerifier``: a valid token maps to its client's user."""

    def __init__(self, settings: Settings) -> None:
        self._clients = [(c.user, c.token_sha256.lower()) for c in settings.mcp.clients]

    async def verify_token(self, token: str) -> AccessToken | None:
        """The access info of the client whose digest matches, or None."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        user = None
        for client_user, expected in self._clients:
            if hmac.compare_digest(digest, expected):
                user = client_user
        if user is None:
            return None
        return AccessToken(token=token, client_id=user, scopes=[], subject=user)


def auth_settings() -> AuthSettings:
    """Resource-server settings for static tokens. The issuer is required by the SDK but never
    advertised: with no ``resource_server_url`` there is no OAuth metadata to discover."""
    return AuthSettings(
        issuer_url="http://localhost",  # type: ignore[arg-type]
        resource_server_url=None,
        required_scopes=[],
    )
