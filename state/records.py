"""Stored records and their encodings (msgpack Structs, float32 vector blobs).

Decoders and encoders are built once and reused. Vectors travel as little-endian float32
bytes: 128 bytes for 32 factors, the cheapest form for Redis and for numpy to read back.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
_F32: Final = np.dtype("<f4")


class UserRecord(msgspec.Struct, frozen=True, array_like=True):
    """What serving needs of a user, written by the dataflow after each of their events."""

    version: int
    """Number of events applied to this user (monotone: a higher version is fresher)."""
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
