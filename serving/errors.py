"""Domain errors and their HTTP answers, in one place.

Every error body is ``{"status_code", "detail", "extra"}``; nothing internal (trace, address,
exception text of a dependency) reaches the client.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from litestar import MediaType, Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException

from serving.producer import BrokerUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


def _body(status: int, detail: str, extra: object = None) -> dict[str, object]:
    body: dict[str, object] = {"status_code": status, "detail": detail}
    if extra:
        body["extra"] = extra
    return body


def broker_unavailable(
    _: Request[object, object, object], exc: BrokerUnavailable
) -> Response[object]:
    """503 + Retry-After: the client should retry the whole request."""
    log.warning("ingest refused: %s", exc)
    return Response(
        _body(503, "Event broker unavailable; nothing was accepted from this request. Retry."),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
        media_type=MediaType.JSON,
    )


def store_unavailable(_: Request[object, object, object], exc: Exception) -> Response[object]:
    """503 + Retry-After when Redis can't be reached or answers too late.

    A temporary state of the service, not a bug; every write the API makes is idempotent, so
    retrying is safe.
    """
    log.warning("state store unavailable: %s", exc)
    return Response(
        _body(
            503,
            "State store unavailable or too slow; the request may not have taken effect. Retry.",
        ),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
        media_type=MediaType.JSON,
    )


def validation_error(
    _: Request[object, object, object], exc: ValidationException
) -> Response[object]:
    """400 with what was wrong with the parameters."""
    return Response(
        _body(exc.status_code, exc.detail, exc.extra),
        status_code=exc.status_code,
        media_type=MediaType.JSON,
    )


def http_error(_: Request[object, object, object], exc: HTTPException) -> Response[object]:
    """4xx with its message; a 5xx never shows internals."""
    detail = exc.detail if exc.status_code < 500 else "Internal server error"
    return Response(
        _body(exc.status_code, detail, exc.extra if exc.status_code < 500 else None),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type=MediaType.JSON,
    )


def unexpected_error(_: Request[object, object, object], exc: Exception) -> Response[object]:
    """500 without a trace (logged server-side)."""
    log.exception("unhandled error", exc_info=exc)
    return Response(_body(500, "Internal server error"), status_code=500, media_type=MediaType.JSON)


EXCEPTION_HANDLERS = {
    BrokerUnavailable: broker_unavailable,
    redis.ConnectionError: store_unavailable,
    redis.TimeoutError: store_unavailable,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}


class JsonBodyRequest(Request[Any, Any, Any]):
    """A request whose JSON body, if unreadable, is the client's error (400), never a 500.

    Litestar maps msgspec's ``DecodeError`` to 400, but msgspec raises ``UnicodeDecodeError``
    for invalid UTF-8 inside a string and ``RecursionError`` for ~1,000 nested brackets; both
    reached ``data: JSONBody[...]`` handlers as 500s (found by fuzzing, issue 8).
    """

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError as exc:
            raise ClientException(f"Body is not valid JSON: invalid UTF-8 ({exc.reason})") from exc
        except RecursionError as exc:
            raise ClientException("Body is not valid JSON: nested too deeply") from exc
