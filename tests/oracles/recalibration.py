"""Recalibration after drift: what a user's state and the global model do when a detector fires.

The user step feeds each interaction's prequential loss (the ISGD error before the step) to a
:class:`UserRecalibration`; on an alarm it refits the user vector from the recent window and
raises the user's learning rate for a while. A :class:`GlobalRecalibration` watches one global
signal (prequential HR@10, CTR) and, when it degrades, shortens the popularity half-life and
boosts learning rates during a warm-up. Both return frozen decisions the flow counts in metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

import numpy as np

from tests.oracles.adwin import ADWIN, AdwinState
from tests.oracles.isgd import IsgdParams, Vector, user_step
from tests.oracles.page_hinkley import Mode, PageHinkley, PageHinkleyState

GlobalDetectorKind = Literal["page_hinkley", "adwin"]
_DETECTOR_KINDS: Final[tuple[str, ...]] = get_args(GlobalDetectorKind)


def _ramp(start: float, left: int, length: int) -> float:
    """A multiplier that is ``start`` with ``length`` events left and 1 with none, linearly."""
    if left <= 0:
        return 1.0
    if left >= length:
        return start  # exactly: 1 + (start - 1) can round one ulp above start
    value = 1.0 + (start - 1.0) * left / length
    return min(max(value, min(start, 1.0)), max(start, 1.0))


def refit_user_vector(
    start: Vector,
    items: Sequence[tuple[Vector, float]],
    params: IsgdParams,
    epochs: int = 3,
    step_multiplier: float = 1.0,
) -> Vector:
    """Re-run ISGD user steps from ``start`` over ``(item vector, weight)`` pairs, oldest first.

    Returns a new vector; ``start`` and the item vectors are left untouched (item vectors are
    held fixed: this is the user half of Vinagre et al. 2014's update, repeated ``epochs``
    times over the window). ``step_multiplier`` scales every step, like an event weight.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 < step_multiplier < math.inf:
        raise ValueError(f"step_multiplier must be finite and > 0, got {step_multiplier}")
    vector: Vector = np.array(start, dtype=np.float32, copy=True)
    for _ in range(epochs):
        for item_vector, weight in items:
            user_step(vector, item_vector, weight * step_multiplier, params)
    return vector


# --- per user ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CategoryProfileSnapshot:
    """Immutable copy of a :class:`CategoryProfile`."""

    decay: float
    max_categories: int
    weights: tuple[tuple[str, float], ...]


class CategoryProfile:
    r"""A user's decayed category frequencies and the surprise of each new event's category.

    The prequential loss of the simplest per-user model, "the next event's category is drawn
    from the user's recent categories": $\ell_t = 1 - c_t(k_t) / \sum_j c_t(j)$, the
    probability it did *not* give to the observed category $k_t$ (1 with no history). Counts
    fade by ``decay`` per event and only the ``max_categories`` heaviest are kept, so the
    state is a few dozen floats. A swap of category affinities drives $\ell_t$ to 1 for
    several events in a row, which :class:`UserRecalibration` can detect; the MF error is a
    weaker signal on sparse logs, where most items are new to the model.

    >>> profile = CategoryProfile(decay=0.9)
    >>> [round(profile.observe(c), 3) for c in ["a", "a", "b", "a", "c"]]
    [1.0, 0.0, 1.0, 0.369, 1.0]
    """

    def __init__(self, decay: float = 0.97, max_categories: int = 32) -> None:
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if isinstance(max_categories, bool) or not isinstance(max_categories, int):
            raise ValueError(f"max_categories must be an int, got {max_categories!r}")
        if max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {max_categories}")
        self.decay = decay
        self.max_categories = max_categories
        self._weights: dict[str, float] = {}

    def surprise(self, category: str) -> float:
        """1 minus the share of the user's decayed history in ``category``."""
        total = math.fsum(self._weights.values())
        return 1.0 - self._weights.get(category, 0.0) / total if total > 0 else 1.0

    def observe(self, category: str) -> float:
        """Return the surprise of ``category``, then add it to the profile."""
        loss = self.surprise(category)
        weights = self._weights
        for key in weights:
            weights[key] *= self.decay
        weights[category] = weights.get(category, 0.0) + 1.0
        if len(weights) > self.max_categories:
            del weights[min(weights, key=weights.__getitem__)]
        return loss

    def snapshot(self) -> CategoryProfileSnapshot:
        """Immutable copy of the state."""
        return CategoryProfileSnapshot(
            self.decay, self.max_categories, tuple(self._weights.items())
        )

    @classmethod
    def restore(cls, snap: CategoryProfileSnapshot) -> CategoryProfile:
        """Rebuild the profile from a snapshot."""
        profile = cls(snap.decay, snap.max_categories)
        profile._weights = dict(snap.weights)
        return profile


@dataclass(frozen=True, slots=True)
class UserRecalibrationConfig:
    """Hyperparameters of the per-user policy (detector, refit, learning-rate boost)."""

    min_instances: int = 10
    """Interactions since the last alarm before the next one may be raised."""
    delta: float = 0.02
    """Page-Hinkley tolerance, in loss units: increases smaller than this never accumulate."""
    lambda_factor: float = 8.0
    """Adaptive threshold: ``lambda_factor`` standard deviations of the user's recent loss."""
    std_alpha: float = 0.95
    """Forgetting factor of that spread (0.95: about the last 20 interactions)."""
    min_threshold: float = 0.3
    """Floor of the threshold, in loss units."""
    alpha: float = 0.999
    """Forgetting factor of the Page-Hinkley sums."""
    refit_events: int = 10
    """The refit uses the user's last ``refit_events`` interactions."""
    refit_epochs: int = 3
    """Passes of ISGD user steps over them."""
    shrink: float = 0.0
    """Share of the old vector kept in the refit's start (0: start from the initial vector)."""
    boost: float = 3.0
    """Learning-rate multiplier right after an alarm (also used for the refit's steps)."""
    boost_events: int = 20
    """Interactions over which the multiplier returns linearly to 1."""

    def __post_init__(self) -> None:
        for name, value, least in (
            ("refit_events", self.refit_events, 1),
            ("refit_epochs", self.refit_epochs, 1),
            ("boost_events", self.boost_events, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        if not 0.0 <= self.shrink <= 1.0:
            raise ValueError(f"shrink must be in [0, 1], got {self.shrink}")
        if not 1.0 <= self.boost < math.inf:
            raise ValueError(f"boost must be finite and >= 1, got {self.boost}")
        self.build_detector()  # validates the detector's hyperparameters

    def build_detector(self) -> PageHinkley:
        """A fresh detector: adaptive-threshold Page-Hinkley watching for a rising loss."""
        return PageHinkley(
            min_instances=self.min_instances,
            delta=self.delta,
            alpha=self.alpha,
            mode="up",
            lambda_factor=self.lambda_factor,
            std_alpha=self.std_alpha,
            min_threshold=self.min_threshold,
        )


@dataclass(frozen=True, slots=True)
class Recalibration:
    """A user-level recalibration: adopt ``user_vector`` and train with the boosted rate.

    ``user_vector`` is a fresh array the caller may adopt as the user's state. ``event_index``
    is the number of interactions the policy had seen when it fired (1-based).
    """

    user_vector: Vector
    learning_rate_multiplier: float
    boost_events: int
    refit_items: int
    threshold: float
    event_index: int


@dataclass(frozen=True, slots=True)
class UserRecalibrationSnapshot:
    """Immutable copy of a :class:`UserRecalibration` (the config is not part of it)."""

    detector: PageHinkleyState
    events: int
    alarms: int
    boost_left: int


class UserRecalibration:
    r"""Per-user drift policy: Page-Hinkley on the prequential loss, then refit and boost.

    **Detection.** Each interaction's prequential loss $\ell_t$ — the ISGD error
    $1 - \langle A_u, B_i\rangle$ *before* the step, which ``user_step`` returns for free (a
    miss indicator works too) — feeds a Page-Hinkley test[^1] for an increase of its mean,
    with the adaptive threshold of :class:`~tests.oracles.page_hinkley.PageHinkley`:
    $\lambda_t = \max(\text{min\_threshold}, \text{lambda\_factor}\cdot\hat\sigma_t)$, where
    $\hat\sigma_t$ is the spread of the user's recent losses (weights fading with
    ``std_alpha``). A user whose losses are noisy thus needs a larger excursion than a user
    whose losses are steady; ``delta`` is the increase tolerated forever.

    **Refit** (on an alarm). Start from
    $A_u^0 = s\,A_u + (1 - s)\,A_u^{\text{init}}$ (``shrink`` $= s$, default 0: the old
    preference is discarded) and run ``refit_epochs`` passes of ISGD user steps (Vinagre et al.
    2014) over the last ``refit_events`` interactions, oldest first, with the *current* item
    vectors held fixed and steps scaled by ``boost``. Those interactions are mostly the ones
    that raised the alarm, so the vector now explains the new preference.

    **Boost.** For the next ``boost_events`` interactions the learning rate is multiplied by
    $m_k = 1 + (\text{boost} - 1)(1 - k/\text{boost\_events})$, $k$ interactions after the
    alarm, reaching 1 after ``boost_events``: the user catches up fast, then settles.

    Per interaction this costs one Page-Hinkley update (~1 µs); a refit costs
    ``refit_events × refit_epochs`` user steps, only on alarms.

    Examples
    --------
    >>> import numpy as np
    >>> from tests.oracles.isgd import IsgdParams
    >>> params = IsgdParams(factors=4)
    >>> old = np.array([1, 0, 0, 0], dtype=np.float32)
    >>> new = np.array([0, 1, 0, 0], dtype=np.float32)
    >>> policy = UserRecalibration()
    >>> user = old.copy()
    >>> losses = [0.1 * (i % 3) for i in range(30)] + [1.0] * 10
    >>> [i for i, loss in enumerate(losses) if policy.update(loss)]
    [33]
    >>> decision = policy.recalibrate(
    ...     user, [("b", 1.0)] * 10, {"b": new}.get, np.zeros(4, np.float32), params
    ... )
    >>> round(float(decision.user_vector @ new), 2), round(float(decision.user_vector @ old), 2)
    (0.98, 0.0)
    >>> policy.learning_rate_multiplier
    3.0

    References
    ----------
    [^1]: E. S. Page. 1954. Continuous Inspection Schemes. Biometrika 41, 1/2 (1954), 100-115.
    [^2]: João Vinagre, Alípio Mário Jorge and João Gama. 2014. Fast Incremental Matrix
    Factorization for Recommendation with Positive-Only Feedback. UMAP 2014, 459-470.

    """

    def __init__(self, config: UserRecalibrationConfig | None = None) -> None:
        self.config = UserRecalibrationConfig() if config is None else config
        self._detector = self.config.build_detector()
        self._events = 0
        self._alarms = 0
        self._boost_left = 0

    @property
    def events(self) -> int:
        """Interactions seen."""
        return self._events

    @property
    def alarms(self) -> int:
        """Alarms raised (each followed by a refit if the caller asked for one)."""
        return self._alarms

    @property
    def learning_rate_multiplier(self) -> float:
        """Multiply the next interaction's ISGD step (its event weight) by this."""
        return _ramp(self.config.boost, self._boost_left, self.config.boost_events)

    @property
    def threshold(self) -> float:
        """The detector's current (adaptive) threshold."""
        return self._detector.current_threshold

    def update(self, loss: float) -> bool:
        """Feed one interaction's prequential loss; True if the user's loss has drifted up.

        Also advances the learning-rate boost by one interaction. Raises ``ValueError`` for a
        non-finite loss.
        """
        drifted = self._detector.update(loss)
        self._events += 1
        if self._boost_left > 0:
            self._boost_left -= 1
        if drifted:
            self._alarms += 1
        return drifted

    def recalibrate(
        self,
        user_vector: Vector,
        recent: Sequence[tuple[str, float]],
        item_vector: Callable[[str], Vector | None],
        initial: Vector,
        params: IsgdParams,
    ) -> Recalibration:
        """Refit the user vector from ``recent`` and start the learning-rate boost.

        ``recent`` is the user's window as ``(item id, event weight)``, oldest first, including
        the interaction that raised the alarm; ``item_vector`` fetches an item's current vector
        (``None``: unknown, skipped), e.g. ``dict.get``; ``initial`` is the user's initial
        vector. Neither ``user_vector`` nor the item vectors are modified.
        """
        cfg = self.config
        items: list[tuple[Vector, float]] = []
        for item_id, weight in recent[-cfg.refit_events :]:
            vector = item_vector(item_id)
            if vector is not None:
                items.append((vector, weight))
        start = (cfg.shrink * user_vector + (1.0 - cfg.shrink) * initial).astype(np.float32)
        refit = refit_user_vector(start, items, params, cfg.refit_epochs, cfg.boost)
        self._boost_left = cfg.boost_events
        return Recalibration(
            user_vector=refit,
            learning_rate_multiplier=cfg.boost,
            boost_events=cfg.boost_events,
            refit_items=len(items),
            threshold=self._detector.current_threshold,
            event_index=self._events,
        )

    def snapshot(self) -> UserRecalibrationSnapshot:
        """Immutable copy of the state."""
        return UserRecalibrationSnapshot(
            self._detector.to_state(), self._events, self._alarms, self._boost_left
        )

    @classmethod
    def restore(
        cls, snap: UserRecalibrationSnapshot, config: UserRecalibrationConfig | None = None
    ) -> UserRecalibration:
        """Rebuild the policy from a snapshot (the detector keeps its snapshotted settings)."""
        policy = cls(config)
        policy._detector = PageHinkley.from_state(snap.detector)
        policy._events = snap.events
        policy._alarms = snap.alarms
        policy._boost_left = snap.boost_left
        return policy


# --- global --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GlobalRecalibrationConfig:
    """Hyperparameters of the global policy (detector, direction, warm-up)."""

    detector: GlobalDetectorKind = "adwin"
    mode: Mode = "down"
    """Which change triggers a warm-up: ``"down"`` for HR@10 or CTR (a drop is bad)."""
    adwin_delta: float = 0.002
    ph_delta: float = 0.1
    ph_lambda_factor: float = 50.0
    ph_alpha: float = 1.0
    """No fading: with alpha < 1 the PH sum is an AR(1) whose stationary spread
    (sigma / sqrt(1 - alpha^2), 70 sigma at 0.9999) swamps any threshold in sigma units."""
    ph_min_instances: int = 1000
    half_life_factor: float = 0.25
    """Multiply the popularity half-life by this at the start of the warm-up."""
    boost: float = 2.0
    """Learning-rate multiplier at the start of the warm-up."""
    warmup_events: int = 10_000
    """Events over which both return linearly to 1."""

    def __post_init__(self) -> None:
        if self.detector not in _DETECTOR_KINDS:
            raise ValueError(f"detector must be one of {_DETECTOR_KINDS}, got {self.detector!r}")
        if not 0.0 < self.half_life_factor <= 1.0:
            raise ValueError(f"half_life_factor must be in (0, 1], got {self.half_life_factor}")
        if not 1.0 <= self.boost < math.inf:
            raise ValueError(f"boost must be finite and >= 1, got {self.boost}")
        if isinstance(self.warmup_events, bool) or not isinstance(self.warmup_events, int):
            raise ValueError(f"warmup_events must be an int, got {self.warmup_events!r}")
        if self.warmup_events < 1:
            raise ValueError(f"warmup_events must be >= 1, got {self.warmup_events}")
        self.build_detector()  # validates mode and the detector's hyperparameters

    def build_detector(self) -> PageHinkley | ADWIN:
        """A fresh detector of the configured kind."""
        if self.detector == "adwin":
            if self.mode not in get_args(Mode):
                raise ValueError(f"mode must be one of {get_args(Mode)}, got {self.mode!r}")
            return ADWIN(delta=self.adwin_delta)
        return PageHinkley(
            min_instances=self.ph_min_instances,
            delta=self.ph_delta,
            alpha=self.ph_alpha,
            mode=self.mode,
            lambda_factor=self.ph_lambda_factor,
        )


@dataclass(frozen=True, slots=True)
class GlobalWarmup:
    """A global recalibration: shorter popularity memory and faster learning for a while."""

    half_life_factor: float
    learning_rate_multiplier: float
    warmup_events: int
    event_index: int
    mean_before: float
    """The signal's mean before the alarm (ADWIN: over its window; PH: since its last reset)."""
    mean_after: float
    """ADWIN: the mean of the window kept after the cut; PH: the value that raised the alarm."""


@dataclass(frozen=True, slots=True)
class GlobalRecalibrationSnapshot:
    """Immutable copy of a :class:`GlobalRecalibration` (the config is not part of it)."""

    detector: PageHinkleyState | AdwinState
    events: int
    alarms: int
    ignored: int
    warmup_left: int


class GlobalRecalibration:
    r"""Global drift policy: a detector on one global signal, then a warm-up.

    **Detection.** One value per event of a global signal — the prequential hit indicator
    behind HR@10, a click indicator behind CTR, or a distance between the recent and the
    long-run item-popularity distributions — feeds ADWIN[^2] (default: it needs no scale
    and its window mean says which way the signal moved) or an adaptive-threshold
    Page-Hinkley test[^1]. An alarm counts only in the direction ``mode`` (``"down"``: a
    drop of HR or CTR); the other direction is counted in ``ignored``. With ADWIN the
    direction is the sign of (mean of the window after the cut − mean before the update);
    Page-Hinkley is built with ``mode`` and so only tests that direction.

    **Warm-up** (on an alarm in the right direction). For the next ``warmup_events`` events
    the popularity half-life is multiplied by
    $h_k = f + (1 - f)\,k/\text{warmup\_events}$ (``half_life_factor`` $= f < 1$: recent
    events weigh more) and learning rates by $m_k = b + (1 - b)\,k/\text{warmup\_events}$
    (``boost`` $= b$), $k$ events after the alarm, both back to 1 at the end. An alarm during
    a warm-up restarts it.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> hits = [float(rng.random() < 0.3) for _ in range(5000)]
    >>> hits += [float(rng.random() < 0.1) for _ in range(5000)]
    >>> policy = GlobalRecalibration(GlobalRecalibrationConfig(warmup_events=1000))
    >>> warmups = [(i, w) for i, x in enumerate(hits) if (w := policy.update(x))]
    >>> [(i, round(w.mean_before, 2), round(w.mean_after, 2)) for i, w in warmups]
    [(5151, 0.29, 0.28)]
    >>> round(policy.half_life_factor, 3), round(policy.learning_rate_multiplier, 3)
    (1.0, 1.0)

    References
    ----------
    [^1]: E. S. Page. 1954. Continuous Inspection Schemes. Biometrika 41, 1/2 (1954), 100-115.
    [^2]: Albert Bifet and Ricard Gavaldà. 2007. Learning from Time-Changing Data with
    Adaptive Windowing. In Proceedings of the 2007 SIAM International Conference on Data
    Mining, 443-448.

    """

    def __init__(self, config: GlobalRecalibrationConfig | None = None) -> None:
        self.config = GlobalRecalibrationConfig() if config is None else config
        self._detector = self.config.build_detector()
        self._events = 0
        self._alarms = 0
        self._ignored = 0
        self._warmup_left = 0

    @property
    def events(self) -> int:
        """Values seen."""
        return self._events

    @property
    def alarms(self) -> int:
        """Alarms that started a warm-up."""
        return self._alarms

    @property
    def ignored(self) -> int:
        """Alarms in the direction that does not call for a warm-up."""
        return self._ignored

    @property
    def half_life_factor(self) -> float:
        """Multiply the popularity half-life by this now (1 outside a warm-up)."""
        cfg = self.config
        return _ramp(cfg.half_life_factor, self._warmup_left, cfg.warmup_events)

    @property
    def learning_rate_multiplier(self) -> float:
        """Multiply learning rates (event weights) by this now (1 outside a warm-up)."""
        cfg = self.config
        return _ramp(cfg.boost, self._warmup_left, cfg.warmup_events)

    def update(self, x: float) -> GlobalWarmup | None:
        """Feed one value of the global signal; return the warm-up it starts, if any."""
        detector = self._detector
        if isinstance(detector, ADWIN):
            before = detector.estimation
            drifted = detector.update(x)
            after = detector.estimation
            went_down = after < before
        else:
            # Page-Hinkley only tests the direction(s) of ``mode``; with "both" any alarm counts.
            drifted = detector.update(x)
            before = detector.to_state().mean if drifted else 0.0
            after = x
            went_down = self.config.mode != "up"
        self._events += 1
        if self._warmup_left > 0:
            self._warmup_left -= 1
        if not drifted:
            return None
        mode = self.config.mode
        if (mode == "down" and not went_down) or (mode == "up" and went_down):
            self._ignored += 1
            return None
        self._alarms += 1
        self._warmup_left = self.config.warmup_events
        return GlobalWarmup(
            half_life_factor=self.config.half_life_factor,
            learning_rate_multiplier=self.config.boost,
            warmup_events=self.config.warmup_events,
            event_index=self._events,
            mean_before=before,
            mean_after=after,
        )

    def snapshot(self) -> GlobalRecalibrationSnapshot:
        """Immutable copy of the state."""
        return GlobalRecalibrationSnapshot(
            self._detector.to_state(), self._events, self._alarms, self._ignored, self._warmup_left
        )

    @classmethod
    def restore(
        cls, snap: GlobalRecalibrationSnapshot, config: GlobalRecalibrationConfig | None = None
    ) -> GlobalRecalibration:
        """Rebuild the policy from a snapshot (the detector keeps its snapshotted settings)."""
        policy = cls(config)
        detector: PageHinkley | ADWIN
        if isinstance(snap.detector, AdwinState):
            detector = ADWIN.from_state(snap.detector)
        else:
            detector = PageHinkley.from_state(snap.detector)
        policy._detector = detector
        policy._events = snap.events
        policy._alarms = snap.alarms
        policy._ignored = snap.ignored
        policy._warmup_left = snap.warmup_left
        return policy
