"""Admin authentication: an API key from the settings, compared in constant time.

The key is never logged or echoed. An empty key in the settings disables admin endpoints.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from freshrec.settings import Settings

API_KEY_HEADER = "X-API-Key"


def admin_guard(settings: Settings):  # type: ignore[no-untyped-def]
    """A Litestar guard that admits requests carrying the admin key."""
    expected = settings.admin_api_key.encode()

    # A coroutine: Litestar runs a plain-function guard in a worker thread.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not expected:
            raise PermissionDeniedException("Admin endpoints are disabled (no admin key set)")
        given = connection.headers.get(API_KEY_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            raise NotAuthorizedException(f"Missing or wrong {API_KEY_HEADER} header")

    return guard
