"""Model lifecycle: snapshot the live model, validate, promote, watch, roll back.

One ``step()`` does what is due: (1) if a version was promoted, compare it with the model it
replaced on the held-out interactions recorded since (test-then-train samples from the live
flow) and roll back if it is worse by more than ``rollback_margin``; (2) if a candidate has
enough held-out interactions recorded after it was frozen, validate it against the serving
model on exactly those and promote or reject it; (3) freeze a new candidate when the last one
is older than ``snapshot_every_s``. ``freshrec lifecycle`` runs it in a loop; the admin API
calls the same registry for manual promotion and rollback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from freshrec.settings import Settings
from operators.model_validation import HeldOut, Validation, accept, validate
from state.model_registry import ModelRegistry, ModelVersion
from state.records import Vector, vector_from_bytes
from state.store import RedisStore

log = logging.getLogger(__name__)

ItemVectors = Callable[[str], Vector | None]


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """Cadence and margins of the lifecycle."""

    snapshot_every_s: float = 300.0
    holdout_min: int = 300
    """Held-out interactions needed to validate a candidate or judge a promotion."""
    margin: float = 0.05
    """A candidate may be this much worse (relative HR@10, absolute AUC) and still promoted."""
    first_auc_min: float = 0.6
    """With no version serving yet, a candidate needs at least this AUC (0.5 is random).

    The live stream is no fair incumbent: it has already learned from the held-out slice."""
    rollback_margin: float = 0.2
    """A promoted version this much worse than its predecessor on fresh data is rolled back."""


class Lifecycle:
    """Drives the registry of one namespace."""

    def __init__(
        self,
        store: RedisStore,
        registry: ModelRegistry,
        config: LifecycleConfig = LifecycleConfig(),
        model_config: dict[str, object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.config = config
        self.model_config = model_config or {}
        self.clock = clock

    # --- models as item-vector lookups -------------------------------------------------
    def live_vectors(self) -> ItemVectors:
        """The live stream's current item vectors."""
        raw = self.store.client.hgetall(self.store.keys.item_factors)
        table = {k.decode(): vector_from_bytes(v) for k, v in raw.items()}
        return table.get

    def version_vectors(self, version_id: str) -> ItemVectors:
        """A version's item vectors, falling back to live vectors for items it lacks."""
        if not version_id:
            return self.live_vectors()
        loaded = self.registry.load(version_id)
        if loaded is None:
            raise KeyError(version_id)
        ids, matrix = loaded
        table = dict(zip(ids, matrix, strict=True))
        live = self.live_vectors()
        return lambda item_id: table.get(item_id) if item_id in table else live(item_id)

    def catalogue(self) -> list[str]:
        """Item ids negatives are drawn from."""
        return sorted(k.decode() for k in self.store.client.hkeys(self.store.keys.item_factors))

    def held_out_since(self, ts_s: float) -> list[HeldOut]:
        """Test-then-train samples recorded after ``ts_s``."""
        return self.store.holdout_since(int(ts_s * 1000))

    def compare(
        self, candidate: str, incumbent: str, held_out: list[HeldOut]
    ) -> tuple[Validation, Validation]:
        """Both models on the same held-out interactions and the same negatives."""
        catalogue = self.catalogue()
        return (
            validate(held_out, self.version_vectors(candidate), catalogue),
            validate(held_out, self.version_vectors(incumbent), catalogue),
        )

    # --- one step ---------------------------------------------------------------------
    def step(self) -> list[str]:
        """Do what is due; return what was done (for logs and tests)."""
        done: list[str] = []
        done += self._watch_promotion()
        done += self._validate_candidates()
        versions = self.registry.versions()
        newest = max((v.created_at for v in versions), default=0.0)
        pending = [v for v in versions if v.status == "candidate"]
        has_items = self.store.client.hlen(self.store.keys.item_factors) > 0
        if not pending and has_items and self.clock() - newest >= self.config.snapshot_every_s:
            version = self.registry.snapshot(self.model_config)
            done.append(f"snapshot {version.version_id} ({version.items} items)")
        return done

    def _watch_promotion(self) -> list[str]:
        active_id = self.registry.active_id()
        active = self.registry.get(active_id) if active_id else None
        if active is None or active.promoted_at is None:
            return []
        held_out = self.held_out_since(active.promoted_at)
        if len(held_out) < self.config.holdout_min:
            return []
        now, before = self.compare(active.version_id, active.previous or "", held_out)
        if now.hit_rate < before.hit_rate * (1.0 - self.config.rollback_margin):
            reason = (
                f"HR@10 {now.hit_rate:.3f} vs {before.hit_rate:.3f} of the previous model on "
                f"{now.interactions} interactions since promotion"
            )
            restored = self.registry.rollback(reason)
            return [f"rolled back {active.version_id} to {restored or 'live'}: {reason}"]
        # Judged good on fresh data: stop watching (the next promotion is watched anew).
        self.registry.update(replace(active, promoted_at=None, note=active.note + " confirmed"))
        return [f"confirmed {active.version_id}"]

    def _validate_candidates(self) -> list[str]:
        done = []
        for version in self.registry.versions():
            if version.status != "candidate":
                continue
            held_out = self.held_out_since(version.created_at)
            if len(held_out) < self.config.holdout_min:
                continue
            incumbent = self.registry.active_id() or ""
            cand, live = self.compare(version.version_id, incumbent, held_out)
            judged = replace(version, validation=cand.as_dict(), baseline=live.as_dict())
            good = (
                accept(cand, live, self.config.margin)
                if incumbent
                else cand.auc >= self.config.first_auc_min
            )
            if good:
                self.registry.update(judged)
                self.registry.promote(version.version_id, "validated")
                done.append(f"promoted {version.version_id}")
            else:
                self.registry.update(replace(judged, status="rejected"))
                done.append(f"rejected {version.version_id}")
        return done


def promote_checked(
    lifecycle: Lifecycle, version: ModelVersion, force: bool
) -> tuple[ModelVersion, str]:
    """Admin promotion: validated against the serving model unless ``force``."""
    if force:
        return lifecycle.registry.promote(version.version_id, "forced by admin"), "forced"
    held_out = lifecycle.held_out_since(version.created_at)
    if len(held_out) < lifecycle.config.holdout_min:
        raise ValueError(
            f"only {len(held_out)} held-out interactions since {version.version_id} was "
            f"frozen; {lifecycle.config.holdout_min} needed (or force)"
        )
    cand, live = lifecycle.compare(
        version.version_id, lifecycle.registry.active_id() or "", held_out
    )
    lifecycle.registry.update(replace(version, validation=cand.as_dict(), baseline=live.as_dict()))
    if not accept(cand, live, lifecycle.config.margin):
        raise ValueError(
            f"{version.version_id} is worse than the serving model: HR@10 {cand.hit_rate:.3f} "
            f"vs {live.hit_rate:.3f}, AUC {cand.auc:.3f} vs {live.auc:.3f}"
        )
    return lifecycle.registry.promote(version.version_id, "validated by admin"), "validated"


def build_lifecycle(settings: Settings) -> Lifecycle:
    """The lifecycle of the deployment described by ``settings``."""
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    registry = ModelRegistry(store, Path(settings.run_dir) / "models")
    config = LifecycleConfig(
        snapshot_every_s=settings.model_snapshot_every_s,
        holdout_min=settings.model_holdout_min,
        margin=settings.model_promotion_margin,
        rollback_margin=settings.model_rollback_margin,
    )
    model_config = {
        "factors": settings.factors,
        "learn_rate": settings.learn_rate,
        "regularization": settings.regularization,
        "seed": settings.seed,
    }
    return Lifecycle(store, registry, config, model_config)


def run(lifecycle: Lifecycle, interval_s: float = 5.0) -> None:
    """Step forever (the ``freshrec lifecycle`` command)."""
    while True:
        try:
            for action in lifecycle.step():
                log.warning("lifecycle: %s", action)
        except Exception:  # Redis away or a bad version: try again next round
            log.exception("lifecycle step failed")
        time.sleep(interval_s)
