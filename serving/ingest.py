"""``POST /v1/events``: validate interaction events and put them on the events topic.

Valid events are produced keyed by ``user_id`` (so each user's events stay in order on one
partition) and the request is answered only after the broker acknowledged them. Invalid ones
are answered with every reason and copied to the dead-letter topic; they never block the
valid events of the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody

from freshrec import metrics
from freshrec.events import (
    Event,
    bounded_dead_letter,
    encode_event,
    errors_as_reason,
    validate_event,
)
from freshrec.settings import Settings
from serving.producer import BrokerUnavailable, EventProducer, OutRecord
from serving.schemas import IngestResult, RejectedEvent


class PayloadTooLarge(ClientException):
    """The body or the batch is larger than allowed."""

    status_code = 413


EXAMPLE_EVENT: dict[str, Any] = {
    "event_id": "e-1",
    "user_id": "u-42",
    "item_id": "sku-7",
    "type": "view",
    "ts": "2026-11-29T10:00:00+01:00",
    "session_id": "s-9",
    "category_id": "shoes",
    "context": {"device": "mobile", "country": "DE"},
}


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """``msgspec.json.schema`` output with its ``$defs`` references inlined (no recursion)."""
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            return _inline_refs(defs[node["$ref"].rpartition("/")[2]], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _events_body_schema() -> dict[str, Any]:
    # An empty array is refused (400); the upper bound is `max_batch_events`, 1,000 by default.
    batch = Annotated[list[Event], msgspec.Meta(min_length=1, max_length=1000)]
    schema = msgspec.json.schema(Event | batch)
    return _inline_refs(schema, schema.get("$defs", {}))  # type: ignore[no-any-return]


@dataclass
class _EventsOperation(Operation):
    """Documents the body the handler reads raw: one event or an array of them."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={
                "application/json": OpenAPIMediaType(
                    schema=_events_body_schema(),  # type: ignore[arg-type]
                    examples={"one event": {"value": EXAMPLE_EVENT}},  # type: ignore[dict-item]
                )
            },
            required=True,
            description="One event object, or an array of up to `max_batch_events` events.",
        )


class EventsController(Controller):
    """Event ingestion."""

    path = "/v1/events"
    tags = ["ingest"]

    @post(
        "/",
        status_code=202,
        operation_class=_EventsOperation,
        summary="Send one interaction event or a batch (JSON object or array)",
        description=(
            "Accepts one event object or an array of up to `max_batch_events` events. "
            "202: every event is durably on the broker. 422: some events were invalid; the "
            "valid ones of the batch were accepted (`accepted`), each invalid one is listed "
            "with every reason. 503 + Retry-After: the broker did not acknowledge; retry "
            "the request (events carry `event_id`, so a retry is deduplicated)."
        ),
    )
    async def post_events(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        producer: NamedDependency[EventProducer],
    ) -> Response[IngestResult]:
        body = await request.body()
        result, status = await ingest(body, settings, producer)
        return Response(result, status_code=status)


async def ingest(
    body: bytes, settings: NamedDependency[Settings], producer: NamedDependency[EventProducer]
) -> tuple[IngestResult, int]:
    """Validate and produce a request body; return the result and the HTTP status."""
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"Body larger than {settings.max_body_bytes} bytes")
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ClientException(f"Body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ClientException("Body is not valid JSON: nested too deeply") from exc
    except UnicodeDecodeError as exc:  # invalid UTF-8 inside a string: msgspec's own error type
        raise ClientException(f"Body is not valid JSON: invalid UTF-8 ({exc.reason})") from exc
    batch = raw if isinstance(raw, list) else [raw]
    if len(batch) > settings.max_batch_events:
        raise PayloadTooLarge(
            f"Batch of {len(batch)} events; at most {settings.max_batch_events} per request"
        )
    if not batch:
        raise ClientException("Empty batch")
    now = datetime.now(UTC)
    records: list[OutRecord] = []
    rejected: list[RejectedEvent] = []
    for index, item in enumerate(batch):
        path = f"$[{index}]" if isinstance(raw, list) else "$"
        checked = validate_event(
            item, now=now, max_future_skew_s=settings.max_future_skew_s, path=path
        )
        if isinstance(checked, Event):
            records.append(
                OutRecord(settings.events_topic, checked.user_id.encode(), encode_event(checked))
            )
        else:
            rejected.append(RejectedEvent(index, checked))
            # Cut to what a record can carry: over the producer's limit it would be a 503.
            payload, _, cut = bounded_dead_letter(msgspec.json.encode(item), None)
            reason = errors_as_reason(checked).encode()[:4096]
            records.append(
                OutRecord(
                    settings.dlq_topic,
                    b"",
                    payload,
                    [("reason", reason), ("source", b"ingest"), *cut],
                )
            )
    try:
        await producer.produce(records)
    except BrokerUnavailable:
        metrics.INGESTED.labels("unavailable").inc(len(batch))
        raise
    accepted = len(batch) - len(rejected)
    metrics.INGESTED.labels("accepted").inc(accepted)
    metrics.INGESTED.labels("rejected").inc(len(rejected))
    return IngestResult(accepted, rejected), (422 if rejected else 202)
