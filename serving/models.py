"""Admin endpoints of the model lifecycle: list versions, snapshot, promote, roll back."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromQuery, PathParameter

from freshrec.lifecycle import Lifecycle, promote_checked


class ModelList(msgspec.Struct, frozen=True):
    """Every stored version and the one serving uses (empty: the live stream)."""

    active: str
    versions: list[dict[str, Any]]


class ModelAction(msgspec.Struct, frozen=True):
    """Outcome of a lifecycle action."""

    active: str
    detail: str


VersionId = Annotated[str, PathParameter(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$(?!\n)")]


class ModelsController(Controller):
    """Model versions (admin: header X-API-Key; the app mounts it behind the admin guard)."""

    path = "/v1/models"
    tags = ["models"]

    @get("/", summary="List model versions", sync_to_thread=False)
    def list_versions(self, lifecycle: NamedDependency[Lifecycle]) -> ModelList:
        registry = lifecycle.registry
        return ModelList(
            registry.active_id() or "", [asdict(v) for v in reversed(registry.versions())]
        )

    @post("/snapshot", summary="Freeze the live item factors as a candidate", sync_to_thread=False)
    def snapshot(self, lifecycle: NamedDependency[Lifecycle]) -> ModelAction:
        try:
            version = lifecycle.registry.snapshot(lifecycle.model_config)
        except ValueError as exc:
            raise ClientException(str(exc)) from exc
        return ModelAction(lifecycle.registry.active_id() or "", f"froze {version.version_id}")

    @post(
        "/{version_id:str}/promote",
        summary="Serve a version (validated on held-out data unless force=true)",
        sync_to_thread=False,
    )
    def promote(
        self,
        version_id: VersionId,
        lifecycle: NamedDependency[Lifecycle],
        force: FromQuery[bool] = False,
    ) -> ModelAction:
        version = lifecycle.registry.get(version_id)
        if version is None:
            raise NotFoundException(f"No model version {version_id}")
        try:
            promoted, how = promote_checked(lifecycle, version, force)
        except ValueError as exc:
            raise ClientException(str(exc)) from exc
        return ModelAction(promoted.version_id, f"promoted ({how})")

    @post("/rollback", summary="Serve the previously active version", sync_to_thread=False)
    def rollback(self, lifecycle: NamedDependency[Lifecycle]) -> ModelAction:
        if lifecycle.registry.active_id() is None:
            raise ClientException("Serving the live stream: nothing to roll back")
        restored = lifecycle.registry.rollback("requested by admin")
        return ModelAction(restored or "", f"rolled back to {restored or 'the live stream'}")
