"""The Python client of a freshrec API: send events, read recommendations.

:class:`Client` (blocking) and :class:`AsyncClient` buffer events and post them in batches to
``POST /v1/events``. An event without ``event_id`` gets one (a UUID) when it is tracked, before
its first attempt, so a retried batch carries the same ids and the dataflow's dedup makes the
retry harmless. 429/502/503/504 and broken connections are retried after ``Retry-After``;
422 is a normal answer (the valid events of the batch were accepted, each invalid one is
listed with its reasons); another 4xx refuses the whole batch; any other 5xx is a server bug
and raises :class:`DeliveryError`, as do exhausted retries.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

import httpx
import msgspec

from freshrec.events import Event, FieldError
from serving.schemas import IngestResult, Recommendations, RejectedEvent, SimilarItems

#: Statuses after which the same batch is posted again: the API or a proxy is overloaded or
#: restarting, and event ids make a retried batch that did land harmless (dedup).
RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})
DEFAULT_RETRY_AFTER_S: Final = 1.0
DEFAULT_BATCH_SIZE: Final = 500
DEFAULT_MAX_ATTEMPTS: Final = 30
DEFAULT_TIMEOUT_S: Final = 30.0

EventLike = Event | Mapping[str, Any]
_encoder: Final = msgspec.json.Encoder()
_ingest_decoder: Final = msgspec.json.Decoder(IngestResult)
_recommendations_decoder: Final = msgspec.json.Decoder(Recommendations)
_similar_decoder: Final = msgspec.json.Decoder(SimilarItems)


class DeliveryError(RuntimeError):
    """A batch could not be delivered: retries exhausted, or the server failed (5xx)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BatchResult(msgspec.Struct, frozen=True):
    """What the API did with one batch: ``accepted`` + ``len(rejected)`` = its size."""

    accepted: int
    rejected: list[RejectedEvent]
    status: int
    attempts: int


def with_event_id(event: EventLike) -> EventLike:
    """The event, with a fresh ``event_id`` if it has none (kept across retries)."""
    if isinstance(event, Event) or event.get("event_id"):
        return event
    return {**event, "event_id": uuid.uuid4().hex}


def retry_after_s(headers: httpx.Headers) -> float:
    """Seconds to wait from ``Retry-After`` (delta-seconds or an HTTP date)."""
    value = headers.get("retry-after")
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def batch_result(response: httpx.Response, size: int, attempts: int) -> BatchResult:
    """The outcome of a batch answered with 2xx or a non-retryable 4xx.

    Every event of the batch is counted as accepted or rejected: a 4xx without ``accepted``
    (400, 413) refused all of them, with the API's ``detail`` as their reason.
    """
    if response.status_code >= 500:
        raise DeliveryError(
            f"{response.request.url} answered {response.status_code}: {response.text[:500]}",
            status=response.status_code,
        )
    try:
        body = _ingest_decoder.decode(response.content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        body = None
    if body is not None:
        accepted = min(max(body.accepted, 0), size)
        rejected = body.rejected
    elif response.is_success:
        accepted, rejected = size, []
    else:
        accepted, rejected = 0, _whole_batch_refused(response, size)
    return BatchResult(accepted, rejected, response.status_code, attempts)


def _whole_batch_refused(response: httpx.Response, size: int) -> list[RejectedEvent]:
    try:
        detail = str(response.json().get("detail", ""))
    except (ValueError, AttributeError):
        detail = ""
    reason = [FieldError("$", detail or f"HTTP {response.status_code}")]
    return [RejectedEvent(i, reason) for i in range(size)]


def _encode_batch(events: Sequence[EventLike]) -> bytes:
    return _encoder.encode(list(events))


def _recommendation_params(k: int, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"k": k, **{name: value for name, value in params.items() if value is not None}}


class _Buffer:
    """Events waiting for a batch, shared by the blocking and the async client."""

    def __init__(self, batch_size: int, max_attempts: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.pending: list[EventLike] = []

    def add(self, events: Iterable[EventLike]) -> list[list[EventLike]]:
        """Buffer events; return the full batches that are due."""
        self.pending.extend(with_event_id(e) for e in events)
        due: list[list[EventLike]] = []
        while len(self.pending) >= self.batch_size:
            due.append(self.pending[: self.batch_size])
            del self.pending[: self.batch_size]
        return due

    def take(self) -> list[EventLike]:
        pending, self.pending = self.pending, []
        return pending


class Client:
    """Blocking client: ``track`` events (batched), ``flush``, read recommendations.

    >>> with Client("http://127.0.0.1:8000") as shop:  # doctest: +SKIP
    ...     shop.track({"user_id": "u-1", "item_id": "sku-7", "type": "view",
    ...                 "ts": "2026-11-29T10:00:00+01:00"})
    ...     shop.flush()
    ...     shop.recommendations("u-1", k=5).items
    """

    def __init__(
        self,
        base_url: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http: httpx.Client | None = None,
    ) -> None:
        self._buffer = _Buffer(batch_size, max_attempts)
        # A pool handed in (a test client, shared connections) stays its owner's to close.
        self._owns_http = http is None
        self._http = http or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self.results: list[BatchResult] = []
        """Every batch's outcome since the client was made, in order."""

    def track(self, *events: EventLike) -> None:
        """Buffer events; a full batch is posted at once."""
        for batch in self._buffer.add(events):
            self.results.append(self.send(batch))

    def flush(self) -> list[BatchResult]:
        """Post what is buffered; return the outcomes of every batch since the last flush."""
        pending = self._buffer.take()
        if pending:
            self.results.append(self.send(pending))
        results, self.results = self.results, []
        return results

    def send(self, events: Sequence[EventLike]) -> BatchResult:
        """Post one batch now (ids added where missing), retrying overloads."""
        events = [with_event_id(e) for e in events]
        if not events:  # the API refuses an empty batch; nothing to send is no error
            return BatchResult(0, [], 0, 0)
        body = _encode_batch(events)
        problem = ""
        for attempt in range(1, self._buffer.max_attempts + 1):
            try:
                response = self._http.post(
                    "/v1/events", content=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as exc:
                problem, wait_s = f"{type(exc).__name__}: {exc}", DEFAULT_RETRY_AFTER_S
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    return batch_result(response, len(events), attempt)
                problem, wait_s = f"HTTP {response.status_code}", retry_after_s(response.headers)
            if attempt < self._buffer.max_attempts:
                time.sleep(wait_s)
        raise DeliveryError(
            f"batch of {len(events)} not accepted after {self._buffer.max_attempts} attempts "
            f"({problem})"
        )

    def recommendations(
        self, user_id: str, k: int = 10, **params: str | int | bool | list[str] | None
    ) -> Recommendations:
        """``GET /v1/users/{user_id}/recommendations`` (filters and context as keywords)."""
        response = self._http.get(
            f"/v1/users/{user_id}/recommendations", params=_recommendation_params(k, params)
        )
        response.raise_for_status()
        return _recommendations_decoder.decode(response.content)

    def similar(self, item_id: str, k: int = 10) -> SimilarItems:
        """``GET /v1/items/{item_id}/similar``."""
        response = self._http.get(f"/v1/items/{item_id}/similar", params={"k": k})
        response.raise_for_status()
        return _similar_decoder.decode(response.content)

    def close(self) -> None:
        """Flush, then close the connection pool."""
        try:
            self.flush()
        finally:
            if self._owns_http:
                self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif self._owns_http:  # don't mask the error with a flush that may fail too
            self._http.close()


class AsyncClient:
    """:class:`Client` for asyncio: the same batching, ids and retries, awaited."""

    def __init__(
        self,
        base_url: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._buffer = _Buffer(batch_size, max_attempts)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self.results: list[BatchResult] = []

    async def track(self, *events: EventLike) -> None:
        """Buffer events; a full batch is posted at once."""
        for batch in self._buffer.add(events):
            self.results.append(await self.send(batch))

    async def flush(self) -> list[BatchResult]:
        """Post what is buffered; return the outcomes of every batch since the last flush."""
        pending = self._buffer.take()
        if pending:
            self.results.append(await self.send(pending))
        results, self.results = self.results, []
        return results

    async def send(self, events: Sequence[EventLike]) -> BatchResult:
        """Post one batch now (ids added where missing), retrying overloads."""
        events = [with_event_id(e) for e in events]
        if not events:  # the API refuses an empty batch; nothing to send is no error
            return BatchResult(0, [], 0, 0)
        body = _encode_batch(events)
        problem = ""
        for attempt in range(1, self._buffer.max_attempts + 1):
            try:
                response = await self._http.post(
                    "/v1/events", content=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as exc:
                problem, wait_s = f"{type(exc).__name__}: {exc}", DEFAULT_RETRY_AFTER_S
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    return batch_result(response, len(events), attempt)
                problem, wait_s = f"HTTP {response.status_code}", retry_after_s(response.headers)
            if attempt < self._buffer.max_attempts:
                await asyncio.sleep(wait_s)
        raise DeliveryError(
            f"batch of {len(events)} not accepted after {self._buffer.max_attempts} attempts "
            f"({problem})"
        )

    async def recommendations(
        self, user_id: str, k: int = 10, **params: str | int | bool | list[str] | None
    ) -> Recommendations:
        """``GET /v1/users/{user_id}/recommendations`` (filters and context as keywords)."""
        response = await self._http.get(
            f"/v1/users/{user_id}/recommendations", params=_recommendation_params(k, params)
        )
        response.raise_for_status()
        return _recommendations_decoder.decode(response.content)

    async def similar(self, item_id: str, k: int = 10) -> SimilarItems:
        """``GET /v1/items/{item_id}/similar``."""
        response = await self._http.get(f"/v1/items/{item_id}/similar", params={"k": k})
        response.raise_for_status()
        return _similar_decoder.decode(response.content)

    async def aclose(self) -> None:
        """Flush, then close the connection pool."""
        try:
            await self.flush()
        finally:
            if self._owns_http:
                await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.aclose()
        elif self._owns_http:
            await self._http.aclose()
