"""Stored records and their encodings (msgpack Structs, float32 vector blobs).

Decoders and encoders are built once and reused. Vectors travel as little-endian float32
bytes: 128 bytes for 32 factors, the cheapest form for Redis and for numpy to read back.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from freshrec.events import Id

Vector = npt.NDArray[np.float32]
_F32: Final = np.dtype("<f4")


class UserRecord(msgspec.Struct, frozen=True, array_like=True):
    """What serving needs of a user, written by the dataflow after each of their events."""

    version: int
    """Monotone counter of the record's changes (a higher version is fresher)."""
    event_ts_s: float
    """Event time of the last applied event."""
    written_at_s: float
    """Wall-clock time the dataflow produced this record (freshness measurement)."""
    vector: bytes
    recent: list[str]
    """Distinct recently consumed items, most recent first."""
    seen: list[str]
    """Items to exclude from recommendations (bounded)."""
    counts: dict[str, int]
    session_no: int = 0
    session_start_ts_s: float = 0.0
    session_event_count: int = 0
    session_items: list[str] = []
    segment: str = ""
    """Context segment of the user's last event (device class | time of day | country)."""
    duplicates: int = 0
    """Events dropped because their id was already applied."""
    dedup_ids: int = 0
    """Event ids currently remembered for dedup."""
    purchased: list[str] = []
    """Items the user bought (bounded), most recent first."""
    events: int = 0
    """Events applied to this user (duplicates not included)."""


_user_encoder: Final = msgspec.msgpack.Encoder()
_user_decoder: Final = msgspec.msgpack.Decoder(UserRecord)


# An 8-byte big-endian version header lets the store's Lua script compare versions without
# decoding msgpack (Redis' cmsgpack cannot read msgpack's bin type).
_VERSION_HEADER: Final = struct.Struct(">Q")
VERSION_HEADER_BYTES: Final = _VERSION_HEADER.size


def encode_user(record: UserRecord) -> bytes:
    """Bytes stored under the user's key: version header, then the msgpack record."""
    return _VERSION_HEADER.pack(record.version) + _user_encoder.encode(record)


def decode_user(blob: bytes) -> UserRecord:
    """Inverse of :func:`encode_user`."""
    return _user_decoder.decode(memoryview(blob)[VERSION_HEADER_BYTES:])


class NeighboursRecord(msgspec.Struct, frozen=True, array_like=True):
    """An item's strongest co-visited neighbours, strongest first."""

    version: int
    item_ids: list[str]
    scores: list[float]
    """log2 of the decayed co-visitation weight."""


_neighbours_encoder: Final = msgspec.msgpack.Encoder()
_neighbours_decoder: Final = msgspec.msgpack.Decoder(NeighboursRecord)


def encode_neighbours(record: NeighboursRecord) -> bytes:
    """Version header, then the msgpack record (same layout as user records)."""
    return _VERSION_HEADER.pack(record.version) + _neighbours_encoder.encode(record)


def decode_neighbours(blob: bytes) -> NeighboursRecord:
    """Inverse of :func:`encode_neighbours`."""
    return _neighbours_decoder.decode(memoryview(blob)[VERSION_HEADER_BYTES:])


class CatalogueItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the shop tells us about an item (``PUT /v1/items``)."""

    item_id: str
    category_id: str | None = None
    title: str | None = None
    price: float | None = None
    available: bool = True
    brand: str | None = None


_catalogue_encoder: Final = msgspec.msgpack.Encoder()
_catalogue_decoder: Final = msgspec.msgpack.Decoder(CatalogueItem)


def encode_catalogue_item(item: CatalogueItem) -> bytes:
    """Stored form of a catalogue entry."""
    return _catalogue_encoder.encode(item)


def decode_catalogue_item(blob: bytes) -> CatalogueItem:
    """Inverse of :func:`encode_catalogue_item`."""
    return _catalogue_decoder.decode(blob)


BOOST_FACTOR_MAX: Final = 100.0
"""A boost multiplies scores by at most this much."""
BURY_FACTOR_MIN: Final = 0.01
"""A bury multiplies scores by at least this much."""
PIN_POSITION_MAX: Final = 100
"""Pins go to positions 1..this (an answer holds at most ``Settings.max_k`` items)."""


class Rule(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """A merchandising rule of ``/v1/rules``, applied to recommendations and similar items.

    ``boost`` (factor in (1, 100]) or ``bury`` (factor in [0.01, 1)) exactly one of an item,
    a category or a brand: scores are multiplied by the factor (a negative one divided), and
    the factors of every matching rule multiply. ``pin`` shows an item at ``position``
    (1-based) whenever it passes the request's filters. Any rule may hold only from
    ``starts_at`` and/or until ``ends_at`` (RFC 3339 with an offset).
    """

    kind: Literal["boost", "bury", "pin"]
    item_id: Id | None = None
    category_id: Id | None = None
    brand: Id | None = None
    factor: float | None = None
    position: Annotated[int, msgspec.Meta(ge=1, le=PIN_POSITION_MAX)] | None = None
    starts_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    ends_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    note: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    """Free text for the people who manage the rules (a campaign name)."""

    def __post_init__(self) -> None:
        # msgspec reports a ValueError raised here as a validation error of the body.
        targets = [n for n in ("item_id", "category_id", "brand") if getattr(self, n) is not None]
        if self.kind == "pin":
            if targets != ["item_id"]:
                raise ValueError("a pin needs an `item_id` (and no `category_id` or `brand`)")
            if self.position is None:
                raise ValueError("a pin needs a `position` (1 is the first)")
            if self.factor is not None:
                raise ValueError("a pin has no `factor` (boost or bury an item instead)")
        else:
            if len(targets) != 1:
                raise ValueError(
                    f"a {self.kind} needs exactly one of `item_id`, `category_id`, `brand`"
                )
            if self.position is not None:
                raise ValueError(f"a {self.kind} has no `position` (pin an item instead)")
            factor = -1.0 if self.factor is None else self.factor
            if self.kind == "boost" and not 1.0 < factor <= BOOST_FACTOR_MAX:
                raise ValueError(f"a boost needs a `factor` above 1, at most {BOOST_FACTOR_MAX:g}")
            if self.kind == "bury" and not BURY_FACTOR_MIN <= factor < 1.0:
                raise ValueError(f"a bury needs a `factor` from {BURY_FACTOR_MIN:g} to below 1")
        starts, ends = self.starts_at, self.ends_at
        if starts is not None and ends is not None and starts >= ends:
            raise ValueError("`starts_at` must be before `ends_at`")

    @property
    def window_s(self) -> tuple[float, float]:
        """The window in unix seconds, ±inf for an open end."""
        starts = float("-inf") if self.starts_at is None else self.starts_at.timestamp()
        ends = float("inf") if self.ends_at is None else self.ends_at.timestamp()
        return starts, ends


_rule_encoder: Final = msgspec.msgpack.Encoder()
_rule_decoder: Final = msgspec.msgpack.Decoder(Rule)


def encode_rule(rule: Rule) -> bytes:
    """Stored form of a rule."""
    return _rule_encoder.encode(rule)


def decode_rule(blob: bytes) -> Rule:
    """Inverse of :func:`encode_rule`."""
    return _rule_decoder.decode(blob)


def vector_to_bytes(vec: Vector) -> bytes:
    """float32 little-endian bytes of a vector."""
    return np.asarray(vec, dtype=_F32).tobytes()


def vector_from_bytes(blob: bytes) -> Vector:
    """A writable float32 vector from its bytes."""
    return np.frombuffer(blob, dtype=_F32).astype(np.float32)


def matrix_from_blobs(blobs: list[bytes], factors: int) -> Vector:
    """Stack equal-length vector blobs into an (n, factors) float32 matrix."""
    if not blobs:
        return np.empty((0, factors), dtype=np.float32)
    joined = b"".join(blobs)
    return np.frombuffer(joined, dtype=_F32).reshape(len(blobs), factors).astype(np.float32)
