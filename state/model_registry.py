"""Model versions: frozen snapshots of the item factors, validated, promoted, rolled back.

A version is a copy of every item vector at one moment plus the config that produced it,
kept in Redis (the last ``keep`` versions) and on disk (``<run_dir>/models/<id>.npz``).
Serving follows the *active* version when one is set (``{fr}:mv:active``), else the live
stream. Every promotion and rollback is recorded on the version and in the alarm stream, so
the dashboard and an operator can see what served when.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import msgspec
import numpy as np

from state.records import Vector, matrix_from_blobs
from state.store import RedisStore


@dataclass(frozen=True)
class ModelVersion:
    """What is known about one version."""

    version_id: str
    created_at: float
    items: int
    factors: int
    config: dict[str, object]
    status: str = "candidate"
    """candidate → promoted / rejected; promoted → retired / rolled_back."""
    validation: dict[str, float] = field(default_factory=dict)
    """The version's own scores on its held-out slice."""
    baseline: dict[str, float] = field(default_factory=dict)
    """The previously active model's scores on the same slice."""
    promoted_at: float | None = None
    previous: str | None = None
    """The version that was active before this one was promoted ("" = the live stream)."""
    note: str = ""


class _Blob(msgspec.Struct, array_like=True):
    item_ids: list[str]
    matrix: bytes


class ModelRegistry:
    """Versions of one namespace."""

    def __init__(self, store: RedisStore, disk_dir: Path | None = None, keep: int = 5) -> None:
        self.store = store
        self.disk_dir = disk_dir
        self.keep = keep

    # --- versions ------------------------------------------------------------------------
    def snapshot(self, config: dict[str, object]) -> ModelVersion:
        """Freeze the current item factors as a new candidate version."""
        raw = self.store.client.hgetall(self.store.keys.item_factors)
        if not raw:
            raise ValueError("no item factors to freeze yet")
        item_ids = [k.decode() for k in raw]
        matrix = matrix_from_blobs(list(raw.values()), self.store.factors)
        version_id = time.strftime("v%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        version = ModelVersion(
            version_id, time.time(), len(item_ids), self.store.factors, dict(config)
        )
        self.save(version, item_ids, matrix)
        return version

    def save(self, version: ModelVersion, item_ids: list[str], matrix: Vector) -> None:
        """Store a version (Redis, and disk when configured) and trim old ones."""
        blob = msgspec.msgpack.encode(
            _Blob(item_ids, np.ascontiguousarray(matrix, np.float32).tobytes())
        )
        keys = self.store.keys
        pipe = self.store.client.pipeline(transaction=False)
        pipe.set(keys.model_blob(version.version_id), blob)
        pipe.hset(keys.model_versions, version.version_id, json.dumps(asdict(version)))
        pipe.execute()
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(
                self.disk_dir / f"{version.version_id}.npz",
                item_ids=np.array(item_ids),
                matrix=matrix,
            )
            (self.disk_dir / f"{version.version_id}.json").write_text(json.dumps(asdict(version)))
        self._trim()

    def _trim(self) -> None:
        """Keep the newest ``keep`` versions, and the active and previous ones whatever age."""
        versions = self.versions()
        pinned = {self.active_id()}
        pinned |= {v.previous for v in versions if v.version_id in pinned}
        doomed = [v for v in versions[: -self.keep] if v.version_id not in pinned]
        keys = self.store.keys
        for v in doomed:
            self.store.client.delete(keys.model_blob(v.version_id))
            self.store.client.hdel(keys.model_versions, v.version_id)

    def versions(self) -> list[ModelVersion]:
        """Every stored version, oldest first."""
        raw = self.store.client.hgetall(self.store.keys.model_versions)
        versions = [ModelVersion(**json.loads(v)) for v in raw.values()]
        return sorted(versions, key=lambda v: v.created_at)

    def get(self, version_id: str) -> ModelVersion | None:
        """One version's record."""
        raw = self.store.client.hget(self.store.keys.model_versions, version_id)
        return None if raw is None else ModelVersion(**json.loads(raw))

    def update(self, version: ModelVersion) -> None:
        """Rewrite a version's record."""
        self.store.client.hset(
            self.store.keys.model_versions, version.version_id, json.dumps(asdict(version))
        )
        if self.disk_dir is not None and self.disk_dir.exists():
            (self.disk_dir / f"{version.version_id}.json").write_text(json.dumps(asdict(version)))

    def load(self, version_id: str) -> tuple[list[str], Vector] | None:
        """A version's item ids and factor matrix."""
        blob = self.store.client.get(self.store.keys.model_blob(version_id))
        if blob is None:
            return None
        data = msgspec.msgpack.decode(blob, type=_Blob)
        matrix = np.frombuffer(data.matrix, np.float32).reshape(-1, self.store.factors).copy()
        return data.item_ids, matrix

    # --- serving pointer -----------------------------------------------------------------
    def active_id(self) -> str | None:
        """The version serving uses (None: the live stream)."""
        raw = self.store.client.get(self.store.keys.active_model)
        return None if raw is None else raw.decode()

    def promote(self, version_id: str, note: str = "") -> ModelVersion:
        """Make a version the one serving uses; the previous one is remembered."""
        version = self.get(version_id)
        if version is None or self.load(version_id) is None:
            raise KeyError(version_id)
        previous = self.active_id()
        if previous is not None and previous != version_id:
            old = self.get(previous)
            if old is not None:
                self.update(replace(old, status="retired"))
        promoted = replace(
            version,
            status="promoted",
            promoted_at=time.time(),
            previous=previous or "",
            note=note or version.note,
        )
        self.update(promoted)
        self.store.client.set(self.store.keys.active_model, version_id)
        self.store.append_alarm(
            {"kind": "model promoted", "scope": "model", "detail": f"{version_id} {note}".strip()}
        )
        return promoted

    def rollback(self, reason: str) -> str | None:
        """Serve the version that was active before the current one; return its id."""
        current_id = self.active_id()
        if current_id is None:
            return None
        current = self.get(current_id)
        previous = current.previous if current is not None else ""
        if current is not None:
            self.update(replace(current, status="rolled_back", note=reason))
        if previous and self.load(previous) is not None:
            self.store.client.set(self.store.keys.active_model, previous)
            prev = self.get(previous)
            if prev is not None:
                self.update(replace(prev, status="promoted"))
        else:
            previous = ""
            self.store.client.delete(self.store.keys.active_model)  # back to the live stream
        self.store.append_alarm(
            {
                "kind": "model rolled back",
                "scope": "model",
                "detail": f"{current_id} -> {previous or 'live'}: {reason}",
            }
        )
        return previous or None
