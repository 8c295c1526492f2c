"""Everything the dataflow keeps per user, and what one event does to it.

One event: drop it if its id was seen within the dedup horizon; otherwise advance the
session, add it to the recent window and the type counts and, for an interaction, apply the
user half of an ISGD step and hand back the item half (for the item's owner) and the
co-visitation pairs it forms with the session's previous items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tests.oracles import sessions
from tests.oracles.dedup import DedupSnapshot, EventDedup
from tests.oracles.isgd import IsgdParams, Vector, initial_vector, user_step
from tests.oracles.recalibration import (
    CategoryProfile,
    CategoryProfileSnapshot,
    Recalibration,
    UserRecalibration,
    UserRecalibrationConfig,
    UserRecalibrationSnapshot,
)
from tests.oracles.user_window import UserWindow, UserWindowSnapshot


@dataclass(frozen=True, slots=True)
class UserConfig:
    """Per-user bounds and horizons (from the settings)."""

    window: int = 50
    seen_max: int = 500
    dedup_horizon_s: float = 86_400.0
    dedup_max_ids: int = 10_000
    session_gap_s: float = 1800.0
    covisit_span: int = 5
    """A new session item pairs with at most this many previous items of the session."""
    recalibration: UserRecalibrationConfig | None = None
    """Per-user drift policy; None disables drift detection."""


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """Immutable copy of a :class:`UserState`."""

    user_id: str
    vector: bytes
    version: int
    window: UserWindowSnapshot
    dedup: DedupSnapshot
    session: sessions.Session
    segment: str
    duplicates: int
    recalibration: UserRecalibrationSnapshot | None = None
    categories: CategoryProfileSnapshot | None = None


@dataclass(frozen=True, slots=True)
class ItemUpdate:
    """What the item's owner needs to apply its half of an ISGD step."""

    item_id: str
    user_vector: bytes
    weight: float
    ts_s: float
    category_id: str | None = None


@dataclass(frozen=True, slots=True)
class CoVisit:
    """``item_id`` was consumed close to each of ``other_ids`` in one session.

    One message per owner: the new item's owner gets all its session neighbours at once,
    each earlier item's owner gets the new item (fewer messages than one per pair).
    """

    item_id: str
    other_ids: tuple[str, ...]
    weights: tuple[float, ...]
    ts_s: float


class UserState:
    """A user's vector, window, session, dedup memory and counters."""

    def __init__(self, user_id: str, params: IsgdParams, config: UserConfig) -> None:
        self.user_id = user_id
        self.params = params
        self.config = config
        self.vector: Vector = initial_vector(user_id, "user", params)
        self.version = 0
        self.window = UserWindow(config.window, config.seen_max)
        self.dedup = EventDedup(config.dedup_horizon_s, config.dedup_max_ids)
        self.session = sessions.NO_SESSION
        self.segment = ""
        self.duplicates = 0
        self.recalibration = (
            None if config.recalibration is None else UserRecalibration(config.recalibration)
        )
        self.last_error = 0.0
        """ISGD error of the last interaction before its step (its prequential loss)."""
        self.categories = CategoryProfile()
        self.last_surprise: float | None = None
        """How unexpected the last interaction's category was (None: no category)."""

    def is_duplicate(self, event_id: str, ts_s: float) -> bool:
        """True (and counted) if this event id was already applied within the horizon."""
        if self.dedup.is_duplicate(event_id, ts_s):
            self.duplicates += 1
            return True
        return False

    def learn(
        self,
        item_id: str,
        item_vector: Vector,
        event_type: str,
        ts_s: float,
        category_id: str | None = None,
        boost: float = 1.0,
    ) -> tuple[ItemUpdate, list[CoVisit]]:
        """Apply an interaction: user half of ISGD, session, window.

        Returns the item half of the ISGD step and the co-visitation pairs (both directions)
        the item forms with the session's previous items.
        """
        weight = self.params.weight_of(event_type)
        before = self.vector.tobytes()
        if self.recalibration is not None:
            boost *= self.recalibration.learning_rate_multiplier
        self.last_surprise = None if category_id is None else self.categories.observe(category_id)
        self.last_error = user_step(self.vector, item_vector, weight * boost, self.params)
        covisits = self._advance_session(item_id, ts_s, weight)
        self.window.add(item_id, event_type, ts_s)
        self.version += 1
        return ItemUpdate(item_id, before, weight, ts_s, category_id), covisits

    def check_drift(
        self, item_vector: Callable[[str], Vector | None], boost: float = 1.0
    ) -> Recalibration | None:
        """Feed the last interaction's loss to the drift policy; on an alarm, recalibrate.

        Call right after :meth:`learn`. On an alarm the user vector is refit from the recent
        window (``item_vector`` fetches current item vectors) and adopted.
        """
        if self.recalibration is None:
            return None
        # The category surprise is the stronger per-user signal on sparse logs (most items
        # are new to the model, so the MF error is ~1 whatever the user does; measured in
        # benchmarks/drift.py); the MF error is the fallback for events without a category.
        loss = self.last_surprise if self.last_surprise is not None else abs(self.last_error)
        if not self.recalibration.update(loss):
            return None
        recent = [(item, self.params.weight_of(kind)) for item, kind, _ in self.window.recent]
        initial = initial_vector(self.user_id, "user", self.params)
        decision = self.recalibration.recalibrate(
            self.vector, recent, item_vector, initial, self.params
        )
        self.vector = decision.user_vector
        return decision

    def observe(self, item_id: str, event_type: str, ts_s: float) -> None:
        """Count an event that does not train the model (e.g. an impression)."""
        self.window.counts[event_type] = self.window.counts.get(event_type, 0) + 1
        self.window.last_ts_s = max(self.window.last_ts_s, ts_s)
        self.version += 1

    def _advance_session(self, item_id: str, ts_s: float, weight: float) -> list[CoVisit]:
        previous = self.session
        self.session = sessions.advance(previous, item_id, ts_s, self.config.session_gap_s)
        if self.session.session_no != previous.session_no or item_id in previous.items:
            return []
        span = previous.items[-self.config.covisit_span :][::-1]
        # Items viewed right before count more than items viewed five clicks ago.
        weights = tuple(weight / distance for distance in range(1, len(span) + 1))
        pairs = [CoVisit(item_id, span, weights, ts_s)]
        pairs += [
            CoVisit(other, (item_id,), (w,), ts_s) for other, w in zip(span, weights, strict=True)
        ]
        return pairs

    def snapshot(self) -> UserSnapshot:
        """Immutable copy of the state."""
        return UserSnapshot(
            self.user_id,
            self.vector.tobytes(),
            self.version,
            self.window.snapshot(),
            self.dedup.snapshot(),
            self.session,
            self.segment,
            self.duplicates,
            None if self.recalibration is None else self.recalibration.snapshot(),
            self.categories.snapshot(),
        )

    @classmethod
    def restore(cls, snap: UserSnapshot, params: IsgdParams, config: UserConfig) -> UserState:
        """Rebuild the state from a snapshot."""
        state = cls(snap.user_id, params, config)
        state.vector = np.frombuffer(snap.vector, dtype=np.float32).copy()
        state.version = snap.version
        state.window = UserWindow.restore(snap.window, config.window, config.seen_max)
        state.dedup = EventDedup.restore(snap.dedup, config.dedup_horizon_s, config.dedup_max_ids)
        state.session = snap.session
        state.segment = snap.segment
        state.duplicates = snap.duplicates
        if snap.categories is not None:
            state.categories = CategoryProfile.restore(snap.categories)
        if snap.recalibration is not None and config.recalibration is not None:
            state.recalibration = UserRecalibration.restore(
                snap.recalibration, config.recalibration
            )
        return state
