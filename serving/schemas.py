"""Request and response types of the HTTP API (msgspec Structs, shown in the OpenAPI docs)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from freshrec.events import FieldError, Id
from state.records import Rule


class RecommendedItem(msgspec.Struct, frozen=True):
    """One recommended item with its score and why it was chosen."""

    item_id: str
    score: float
    reason: str


class Recommendations(msgspec.Struct, frozen=True):
    """Top-K items for a user."""

    recommendation_id: str
    fallback: bool
    """True when the answer was degraded (Redis or the model unavailable)."""
    items: list[RecommendedItem]
    model_version: int = 0
    """Sequence number of the item matrix the scores came from (0: popularity only)."""
    variant: str = "default"
    """The user's A/B variant (``FRESHREC_VARIANTS``); its name is in the recommendation id."""
    user_events: int = 0
    """How many of the user's events the answer reflects (0: none, a user not seen yet): a
    client that sent its n-th event can tell whether the answer already follows from it."""


class SimilarItems(msgspec.Struct, frozen=True):
    """Items to show next to a product."""

    item_id: str
    items: list[RecommendedItem]
    model_version: int = 0


class CatalogueEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item of ``PUT /v1/items``."""

    item_id: Id
    category_id: Id | None = None
    title: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    # `extra_json_schema` only for the docs: Litestar drops a falsy bound (`ge=0`) of an
    # optional field from the OpenAPI schema (found by fuzzing from the schema, issue 8).
    price: (
        Annotated[float, msgspec.Meta(ge=0, extra_json_schema={"extra": {"minimum": 0}})] | None
    ) = None
    available: bool = True
    brand: Id | None = None
    """The item's brand (rules can boost or bury a brand)."""


class CataloguePage(msgspec.Struct, frozen=True):
    """Catalogue entries of ``GET /v1/catalogue``, in the order they were written."""

    items: list[CatalogueEntry]
    next_offset: int | None
    """Offset of the next page; null on the last one."""


class CatalogueResult(msgspec.Struct, frozen=True):
    """Outcome of ``PUT /v1/items``."""

    written: int


class RuleEntry(Rule, kw_only=True):
    """A stored merchandising rule and its id."""

    rule_id: str


class RuleList(msgspec.Struct, frozen=True):
    """Every merchandising rule, and the version the API processes follow."""

    version: int
    rules: list[RuleEntry]


class RejectedEvent(msgspec.Struct, frozen=True):
    """An event of a batch that was not accepted, with every reason."""

    index: int
    errors: list[FieldError]


class IngestResult(msgspec.Struct, frozen=True):
    """Outcome of ``POST /v1/events``: accepted events are on the broker, durably."""

    accepted: int
    rejected: list[RejectedEvent] = []


class ErrorBody(msgspec.Struct, frozen=True):
    """Every 4xx/5xx body: a status, a message and optional details."""

    status_code: int
    detail: str
    extra: Annotated[dict[str, object] | None, msgspec.Meta(description="details")] = None


class Health(msgspec.Struct, frozen=True):
    """Liveness and what the API can reach."""

    status: str
    redis: bool
    items_in_index: int
    item_matrix_seq: int
    model_version: str = ""
    """The promoted model version serving uses ("" = the live stream)."""


class ErasureAccepted(msgspec.Struct, frozen=True):
    """Outcome of ``DELETE /v1/users/{id}``: the tombstone is on the broker, durably."""

    user_id: str
    erasure_id: str
    """Look up its completion with ``GET /v1/erasures/{erasure_id}``."""
    status: str = "pending"


class MergeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/users/{id}/merge``: the anonymous id to merge into the user."""

    source_user_id: Id
    """The anonymous id (e.g. the SDK's ``anon-…``); erased once merged."""


class MergeAccepted(msgspec.Struct, frozen=True):
    """Outcome of a merge: the source's items are on the broker as the user's events."""

    user_id: str
    source_user_id: str
    events: int
    """Events produced for ``user_id`` (the source's recent items and purchases)."""
    erasure_id: str
    """The erasure of ``source_user_id``."""


class ErasureStatus(msgspec.Struct, frozen=True):
    """Whether the dataflow has applied an erasure (state dropped, keys deleted)."""

    erasure_id: str
    status: str
    """``done``, or ``pending`` (not applied yet, or no such erasure)."""
    completed_at: float | None = None
    """Unix time the dataflow (last) applied it."""
