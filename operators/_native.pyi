"""Types of the native core (``operators/src/``); one section per Rust module."""

from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]

# --- isgd.rs ---------------------------------------------------------------------------------

DEFAULT_EVENT_WEIGHTS: Final[Mapping[str, float]]

class IsgdParams:
    """Hyperparameters of ISGD (Vinagre et al. 2014), named as in the paper."""

    factors: int
    learn_rate: float
    regularization: float
    init_std: float
    seed: int
    max_norm: float
    def __init__(
        self,
        factors: int = 32,
        learn_rate: float = 0.05,
        regularization: float = 0.01,
        init_std: float = 0.1,
        seed: int = 42,
        event_weights: Mapping[str, float] | None = None,
        max_norm: float = 10.0,
    ) -> None: ...
    @property
    def event_weights(self) -> dict[str, float]: ...
    def weight_of(self, event_type: str) -> float: ...

def initial_vector(entity_id: str, kind: Literal["user", "item"], params: IsgdParams) -> Vector: ...
def user_step(user_vec: Vector, item_vec: Vector, weight: float, params: IsgdParams) -> float: ...
def item_step(item_vec: Vector, user_vec: Vector, weight: float, params: IsgdParams) -> float: ...

class IncrementalMF:
    """Sequential ISGD over a stream (the offline harness's model)."""

    def __init__(self, params: IsgdParams) -> None: ...
    def learn(self, user_id: str, item_id: str, weight: float = 1.0) -> float: ...
    def score(self, user_id: str, item_ids: Sequence[str]) -> list[float]: ...
    def user_vector(self, user_id: str) -> Vector | None: ...
    def item_vector(self, item_id: str) -> Vector | None: ...

# --- popularity.rs ---------------------------------------------------------------------------

NO_POPULARITY: Final[float]

def add_event(log2_score: float, weight: float, ts_s: float, half_life_s: float) -> float: ...
def decayed_value(log2_score: float, now_s: float, half_life_s: float) -> float: ...

# --- enrich.rs -------------------------------------------------------------------------------

class Enricher:
    """Context enrichment of every event, by the rules of `operators.enrich` (their oracle).

    Bounded caches (CLOCK eviction) of the rules' answers per distinct (user agent, device) and
    (country, region); a miss asks `operators.enrich`. Local time is computed natively from the
    TZif files of the ``tzdata`` package, as `operators.enrich.local_time` does.
    """

    def __init__(self, cache_size: int = 8192) -> None: ...
    @property
    def cache_size(self) -> int:
        """Entries each of the two caches keeps at most."""
    def enrich(
        self,
        user_agent: str | None,
        device: str | None,
        country: str | None,
        region: str | None,
        ts_us: int,
        utc_offset_s: int,
    ) -> tuple[
        Literal["mobile", "tablet", "desktop", "bot", "other", "unknown"],
        str | None,
        str | None,
        Literal["night", "morning", "afternoon", "evening"],
        int,
        bool,
        int,
        str,
    ]:
        """The context of an event at ``ts_us`` (UTC microseconds), written with ``utc_offset_s``.

        (device_class, country, region, tod_bucket, weekday, is_weekend, local_hour, segment):
        the fields of `operators.enrich.EventContext`, then its `segment_key`.
        """
    def local_time_us(
        self, country: str | None, region: str | None, ts_us: int, utc_offset_s: int
    ) -> int:
        """The wall clock where the event happened, in microseconds since 1970-01-01 (local)."""
    def stats(self) -> dict[str, int]:
        """Counts of the caches and zones.

        device_hits, device_misses, device_entries, place_hits, place_misses, place_entries,
        and zones (loaded, UTC included).
        """

# --- page_hinkley.rs -------------------------------------------------------------------------

Mode = Literal["up", "down", "both"]

class PageHinkley:
    r"""Page-Hinkley test for increases and/or decreases of a stream's mean (Page 1954).

    With $\bar{x}_t$ the mean of the values since the last reset, the detector keeps two faded
    cumulative deviations $U_t = \alpha U_{t-1} + (x_t - \bar{x}_t - \delta)$ and
    $L_t = \alpha L_{t-1} + (x_t - \bar{x}_t + \delta)$ and alarms once
    $U_t - \min_{s \le t} U_s > \lambda$ (``mode="up"``) or $\max_{s \le t} L_s - L_t > \lambda$
    (``"down"``), never before ``min_instances`` values. The update after an alarm starts from
    a fresh state, as in river, whose ``PageHinkley`` this reproduces value for value.

    With ``lambda_factor`` set the threshold follows the stream's recent spread:
    $\lambda_t = \max(\text{min\_threshold}, \text{lambda\_factor} \cdot \hat\sigma_t)$, where
    $\hat\sigma_t^2$ is an exponentially weighted variance updated with weight
    $w_t = \max(1/n_t, 1 - \text{std\_alpha})$: $\hat\mu_t = \hat\mu_{t-1} + w_t d_t$,
    $\hat\sigma^2_t = (1 - w_t)(\hat\sigma^2_{t-1} + w_t d_t^2)$, $d_t = x_t - \hat\mu_{t-1}$.

    ``to_state()`` is ``b"PHK"``, version 1, then the hyperparameters and the learned numbers
    (layout in ``operators/src/page_hinkley.rs``).

    >>> import random
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> ph = PageHinkley()
    >>> [i for i, x in enumerate(stream) if ph.update(x)]
    [1006]
    """

    min_instances: int
    delta: float
    threshold: float
    alpha: float
    mode: Mode
    lambda_factor: float | None
    std_alpha: float
    min_threshold: float
    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Mode = "both",
        lambda_factor: float | None = None,
        std_alpha: float = 0.999,
        min_threshold: float = 1.0,
    ) -> None: ...
    @property
    def drift_detected(self) -> bool:
        """Whether the last update raised an alarm."""
    @property
    def current_threshold(self) -> float:
        """The threshold the last update was tested against (the floor before any update)."""
    @property
    def n(self) -> int:
        """Values since the last reset."""
    @property
    def mean(self) -> float:
        """Mean of the values since the last reset."""
    def update(self, x: float) -> bool:
        """Advance the test by one value; whether it alarmed. ``ValueError`` if not finite."""
    def to_state(self) -> bytes:
        """Versioned snapshot bytes (hyperparameters included)."""
    @staticmethod
    def from_state(data: bytes) -> PageHinkley:
        """Rebuild a detector from ``to_state``'s bytes; hyperparameters are re-validated."""

# --- adwin.rs --------------------------------------------------------------------------------

class ADWIN:
    r"""Adaptive windowing (ADWIN2) change detection (Bifet and Gavaldà 2007).

    Keeps the longest recent window $W$ in which no change can be found: every ``clock``
    updates it tries each split of $W$ into an older $W_0$ and a newer $W_1$ (both at least
    ``min_window_length`` long) and drops the oldest values while some split has
    $|\hat\mu_{W_0} - \hat\mu_{W_1}| > \sqrt{2 \frac{1}{m} \hat\sigma_W^2 \delta'}
    + \frac{2}{3} \frac{\delta'}{m}$, $\frac{1}{m} = \frac{1}{n_0 - \ell + 1} +
    \frac{1}{n_1 - \ell + 1}$, $\delta' = \ln \frac{2 \ln |W|}{\delta}$. Shrinking the window
    is the alarm; the window is an exponential histogram of at most ``max_buckets`` buckets
    per size $2^i$.

    Reproduces ``river.drift.ADWIN`` (river 0.26) value for value, including its two
    departures from the paper: no split is tried before ``grace_period`` values, and the update
    after an alarm starts from an empty window. ``variance`` is the window's sum of squared
    deviations divided by ``width`` (river's ``variance`` is the sum: our ``sum_squares``). With
    ``max_buckets=1`` river 0.26 panics after its first cut; here empty rows are dropped.

    ``to_state()`` is ``b"ADW"``, version 1, then the hyperparameters and the histogram.

    >>> import random
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> adwin = ADWIN()
    >>> [i for i, x in enumerate(stream) if adwin.update(x)], adwin.width
    ([1023], 976)
    """

    delta: float
    clock: int
    max_buckets: int
    min_window_length: int
    grace_period: int
    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None: ...
    @property
    def drift_detected(self) -> bool:
        """Whether the last update shrank the window."""
    @property
    def width(self) -> int:
        """Number of values in the window."""
    @property
    def total(self) -> float:
        """Sum of the values in the window."""
    @property
    def estimation(self) -> float:
        """Mean of the values in the window (0 when it is empty)."""
    @property
    def sum_squares(self) -> float:
        """Sum of squared deviations from the window's mean (river's ``variance``)."""
    @property
    def variance(self) -> float:
        """Population variance of the values in the window (0 when it is empty)."""
    @property
    def buckets(self) -> tuple[tuple[tuple[float, float], ...], ...]:
        """The histogram (a copy), one row per bucket size 2**i, oldest bucket first.

        Each bucket is (sum of its values, sum of squared deviations from their mean).
        """
    def update(self, x: float) -> bool:
        """Add one value, shrink the window if it holds a change; whether it did."""
    def to_state(self) -> bytes:
        """Versioned snapshot bytes (hyperparameters included)."""
    @staticmethod
    def from_state(data: bytes) -> ADWIN:
        """Rebuild a detector from ``to_state``'s bytes; hyperparameters are re-validated."""

# --- recalibration.rs ------------------------------------------------------------------------

GlobalDetectorKind = Literal["page_hinkley", "adwin"]

def refit_user_vector(
    start: Vector,
    items: Sequence[tuple[Vector, float]],
    params: IsgdParams,
    epochs: int = 3,
    step_multiplier: float = 1.0,
) -> Vector:
    """Re-run ISGD user steps from ``start`` over ``(item vector, weight)`` pairs, oldest first.

    Returns a new float32 vector; the inputs are left untouched (item vectors are held fixed:
    the user half of Vinagre et al. 2014's update, repeated ``epochs`` times). ``ValueError``
    when a vector does not have ``params.factors`` values.
    """

class CategoryProfile:
    r"""A user's decayed category frequencies and the surprise of each new event's category.

    $\ell_t = 1 - c_t(k_t) / \sum_j c_t(j)$ (the sum exactly rounded, as ``math.fsum``; 1 with
    no history); counts fade by ``decay`` per event and only the ``max_categories`` heaviest
    are kept (of equally light ones the first seen goes). ``to_state()``: ``b"CAT"``, version 1,
    decay f64, max_categories varint, then the (category, weight) pairs in first-seen order.

    >>> profile = CategoryProfile(decay=0.9)
    >>> [round(profile.observe(c), 3) for c in ["a", "a", "b", "a", "c"]]
    [1.0, 0.0, 1.0, 0.369, 1.0]
    """

    decay: float
    max_categories: int
    def __init__(self, decay: float = 0.97, max_categories: int = 32) -> None: ...
    @property
    def weights(self) -> list[tuple[str, float]]:
        """(category, weight) pairs in first-seen order (a copy)."""
    def surprise(self, category: str) -> float:
        """1 minus the share of the user's decayed history in ``category``."""
    def observe(self, category: str) -> float:
        """Return the surprise of ``category``, then add it to the profile."""
    def to_state(self) -> bytes: ...
    @staticmethod
    def from_state(data: bytes) -> CategoryProfile: ...

class UserRecalibrationConfig:
    """Hyperparameters of the per-user policy (detector, refit, learning-rate boost)."""

    min_instances: int
    delta: float
    lambda_factor: float
    std_alpha: float
    min_threshold: float
    alpha: float
    refit_events: int
    refit_epochs: int
    shrink: float
    boost: float
    boost_events: int
    def __init__(
        self,
        min_instances: int = 10,
        delta: float = 0.02,
        lambda_factor: float = 8.0,
        std_alpha: float = 0.95,
        min_threshold: float = 0.3,
        alpha: float = 0.999,
        refit_events: int = 10,
        refit_epochs: int = 3,
        shrink: float = 0.0,
        boost: float = 3.0,
        boost_events: int = 20,
    ) -> None: ...
    def build_detector(self) -> PageHinkley:
        """A fresh detector: adaptive-threshold Page-Hinkley watching for a rising loss."""

class Recalibration:
    """A user-level recalibration: adopt ``user_vector`` and train with the boosted rate."""

    @property
    def user_vector(self) -> Vector:
        """The refit vector (a fresh array on each access)."""
    learning_rate_multiplier: float
    boost_events: int
    refit_items: int
    threshold: float
    event_index: int

class UserRecalibration:
    r"""Per-user drift policy: Page-Hinkley on the prequential loss, then refit and boost.

    Each interaction's loss feeds an adaptive-threshold Page-Hinkley test for an increase
    (``mode="up"``). On an alarm, ``recalibrate`` refits the user vector from
    ``shrink * user + (1 - shrink) * initial`` with ``refit_epochs`` passes of ISGD user steps
    over the last ``refit_events`` interactions (item vectors fixed, steps scaled by ``boost``),
    and the learning rate is multiplied by a ramp from ``boost`` back to 1 over
    ``boost_events`` interactions. ``to_state()``: ``b"URC"``, version 1, the detector's learned
    numbers, events, alarms, boost_left; the config is not part of it (``from_state`` takes it).

    >>> import numpy as np
    >>> policy = UserRecalibration()
    >>> losses = [0.1 * (i % 3) for i in range(30)] + [1.0] * 10
    >>> [i for i, loss in enumerate(losses) if policy.update(loss)]
    [33]
    """

    def __init__(self, config: UserRecalibrationConfig | None = None) -> None: ...
    @property
    def config(self) -> UserRecalibrationConfig: ...
    @property
    def events(self) -> int:
        """Interactions seen."""
    @property
    def alarms(self) -> int:
        """Alarms raised."""
    @property
    def learning_rate_multiplier(self) -> float:
        """Multiply the next interaction's ISGD step (its event weight) by this."""
    @property
    def threshold(self) -> float:
        """The detector's current (adaptive) threshold."""
    def update(self, loss: float) -> bool:
        """Feed one interaction's prequential loss; True if it has drifted up."""
    def recalibrate(
        self,
        user_vector: Vector,
        recent: Sequence[tuple[str, float]],
        item_vector: Callable[[str], Vector | None],
        initial: Vector,
        params: IsgdParams,
    ) -> Recalibration:
        """Refit the user vector from ``recent`` and start the learning-rate boost.

        ``recent`` is (item id, event weight), oldest first; ``item_vector`` fetches an item's
        current vector (None: unknown, skipped).
        """
    def to_state(self) -> bytes: ...
    @staticmethod
    def from_state(
        data: bytes, config: UserRecalibrationConfig | None = None
    ) -> UserRecalibration: ...

class GlobalRecalibrationConfig:
    """Hyperparameters of the global policy (detector, direction, warm-up)."""

    detector: GlobalDetectorKind
    mode: Mode
    adwin_delta: float
    ph_delta: float
    ph_lambda_factor: float
    ph_alpha: float
    ph_min_instances: int
    half_life_factor: float
    boost: float
    warmup_events: int
    def __init__(
        self,
        detector: GlobalDetectorKind = "adwin",
        mode: Mode = "down",
        adwin_delta: float = 0.002,
        ph_delta: float = 0.1,
        ph_lambda_factor: float = 50.0,
        ph_alpha: float = 1.0,
        ph_min_instances: int = 1000,
        half_life_factor: float = 0.25,
        boost: float = 2.0,
        warmup_events: int = 10_000,
    ) -> None: ...
    def build_detector(self) -> PageHinkley | ADWIN:
        """A fresh detector of the configured kind."""

class GlobalWarmup:
    """A global recalibration: shorter popularity memory and faster learning for a while."""

    half_life_factor: float
    learning_rate_multiplier: float
    warmup_events: int
    event_index: int
    mean_before: float
    mean_after: float

class GlobalRecalibration:
    r"""Global drift policy: ADWIN or adaptive Page-Hinkley on one global signal, then a warm-up.

    An alarm counts only in the direction ``mode`` (ADWIN: the sign of window mean after the
    cut minus mean before the update; Page-Hinkley tests only that direction); others are
    counted in ``ignored``. For ``warmup_events`` events after an alarm the half-life factor
    and the learning-rate multiplier ramp linearly from ``half_life_factor`` and ``boost``
    back to 1. ``to_state()``: ``b"GRC"``, version 1, the detector kind and state, events,
    alarms, ignored, warmup_left; the config is not part of it.
    """

    def __init__(self, config: GlobalRecalibrationConfig | None = None) -> None: ...
    @property
    def config(self) -> GlobalRecalibrationConfig: ...
    @property
    def events(self) -> int: ...
    @property
    def alarms(self) -> int: ...
    @property
    def ignored(self) -> int: ...
    @property
    def half_life_factor(self) -> float:
        """Multiply the popularity half-life by this now (1 outside a warm-up)."""
    @property
    def learning_rate_multiplier(self) -> float:
        """Multiply learning rates (event weights) by this now (1 outside a warm-up)."""
    def update(self, x: float) -> GlobalWarmup | None:
        """Feed one value of the global signal; return the warm-up it starts, if any."""
    def to_state(self) -> bytes: ...
    @staticmethod
    def from_state(
        data: bytes, config: GlobalRecalibrationConfig | None = None
    ) -> GlobalRecalibration:
        """Rebuild under ``config``, which must name the snapshot's detector kind."""

def _ramp(start: float, left: int, length: int) -> float:
    """``start`` with ``length`` events left, 1 with none, linearly (tests only)."""

def _fsum(values: Sequence[float]) -> float:
    """The exactly rounded sum, as ``math.fsum`` (tests only)."""

# --- feedback.rs -----------------------------------------------------------------------------

IMPRESSION: Final[str]
CLICK: Final[str]
CONVERSION_TYPES: Final[frozenset[str]]

class WindowCounts:
    """Counts of one window; immutable."""

    start_s: float
    impressions: int
    clicks: int
    conversions: int
    def __init__(
        self, start_s: float, impressions: int = 0, clicks: int = 0, conversions: int = 0
    ) -> None: ...
    @property
    def ctr(self) -> float | None:
        """Clicks per impression (None without impressions)."""
    @property
    def conversion_rate(self) -> float | None:
        """Conversions per click (None without clicks)."""

def model_of(recommendation_id: str) -> str:
    """The model version a recommendation id was served by (``<model>.<uuid>``)."""

class FeedbackWindows:
    """Tumbling-window feedback counters of one (model, segment), in event time.

    ``to_state()``: ``b"FBW"``, version 1, the windows oldest first; the config is not part
    of it (``from_state`` takes ``window_s`` and ``keep``).
    """

    window_s: float
    keep: int
    def __init__(self, window_s: float = 300.0, keep: int = 288) -> None: ...
    @property
    def windows(self) -> list[WindowCounts]:
        """The windows kept, oldest first (a copy)."""
    def add(self, event_type: str, ts_s: float) -> WindowCounts | None:
        """Count one feedback event; return its window's counts (None if not feedback)."""
    def to_state(self) -> bytes: ...
    @staticmethod
    def from_state(data: bytes, window_s: float = 300.0, keep: int = 288) -> FeedbackWindows: ...

# --- prequential.rs --------------------------------------------------------------------------

def sampled_negatives(key: str, catalogue: Sequence[str], count: int, exclude: str) -> list[str]:
    """Up to ``count`` distinct items drawn with a seed derived from ``key``, minus ``exclude``.

    Little-endian 64-bit words of SHAKE-128(key) modulo the catalogue size, repeats skipped,
    in the order drawn: the same key always draws the same items.
    """

class PrequentialReport:
    """Totals over every evaluated event (``window_*``: the moving average as last seen)."""

    events: int
    hit_rate: float
    @property
    def recall_at(self) -> dict[int, float]: ...
    ndcg: float
    mrr: float
    coverage: float
    window_recall: float
    mean_window_recall: float

class PrequentialEvaluator:
    """Hit rate, recall@k, NDCG@k, MRR and coverage of a stream of ranked lists.

    >>> ev = PrequentialEvaluator(k=2, cutoffs=(1, 2), window=2)
    >>> ev.evaluate("u", "a", ["a", "b"]), ev.evaluate("u", "c", ["a", "b", "c"])
    (1, 3)
    """

    k: int
    cutoffs: list[int]
    window: int
    events: int
    hits: int
    def __init__(
        self, k: int = 10, cutoffs: Sequence[int] = (10, 20), window: int = 3000
    ) -> None: ...
    def evaluate(self, user: object, true_item: str, ranked_items: Sequence[str]) -> int:
        """Score one ranked list against the item the user chose; its rank (0: absent)."""
    @property
    def window_recall(self) -> float:
        """Recall@k over the last ``window`` evaluated events (0 before any)."""
    def report(self, catalogue_size: int) -> PrequentialReport: ...
    def to_state(self) -> bytes: ...
    @staticmethod
    def from_state(data: bytes) -> PrequentialEvaluator: ...

# --- ranking.rs (and similar.rs): serving's ranking, one call per request --------------------

NO_CATEGORY: Final[int]
"""Category code of an item without category (never capped)."""
REASON_TRENDING: Final[int]
REASON_NEW: Final[int]
REASON_RECOMMENDED: Final[int]
SIMILARITY_REASON_MIN: Final[float]
ANN_FETCH_MIN: Final[int]
"""Graph candidates (and best popular ones) of a request's first round."""
ANN_FETCH_ROUNDS: Final[int]

_Rows = npt.NDArray[np.intp]

class Ranker:
    """The item side of ranking for one version of the item matrix and the ranked lists.

    Holds the arrays by reference (zero-copy) and gathers the popular items' vectors once.
    ``popular_rows``: the ranked popular list as rows (None: an item without factors, which
    still takes its rank); ``trending_rows``: rows of the trending items; ``prices``: NaN for
    an item without price (None: no prices).
    """

    def __init__(
        self,
        matrix: npt.NDArray[np.float32],
        size: int,
        category_codes: npt.NDArray[np.int32],
        unavailable: npt.NDArray[np.bool_],
        norms: npt.NDArray[np.float32],
        popular_rows: Sequence[int | None],
        trending_rows: Sequence[int],
        prices: npt.NDArray[np.float64] | None = None,
    ) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def graph_misses(self) -> int:
        """Requests given a graph that brute force answered."""
    @property
    def popular_rows(self) -> list[int]: ...
    def rank(
        self,
        user_vector: bytes,
        evidence: float,
        k: int,
        *,
        nearest: Callable[[int], tuple[_Rows, float]] | None,
        covisits: Sequence[tuple[_Rows, npt.NDArray[np.float64]] | None],
        excluded_rows: Sequence[int],
        available_only: bool,
        wanted_categories: Sequence[int] | None,
        unwanted_categories: Sequence[int],
        max_per_category: int,
        recent_rows: Sequence[int],
        recent_categories: Sequence[int],
        min_price: float | None = None,
        max_price: float | None = None,
        merchandising: Merchandising | None = None,
        new_item_slots: int = 0,
    ) -> tuple[list[int], list[float], list[int]]:
        """The best ``k`` picks: slots, scores (float32 values) and reason codes.

        ``nearest(n)``: about the ``n`` best rows by inner product (with the rows changed
        since the graph's snapshot) and the lowest inner product among them (-inf: nothing
        left out); None: brute force. ``covisits[n]``: the n-th source's neighbour rows and
        boosts. A reason code >= 0 indexes ``sources + recent items``; else ``REASON_*``.
        Pins and up to ``new_item_slots`` new items (slot ``size + j``: the merchandising's
        new item j) come first, the organic picks fill the rest. ``min_price > max_price``
        is a ValueError.
        """
    def rank_lists(
        self,
        lists: Sequence[tuple[_Rows, npt.NDArray[np.float32], int, int]],
        k: int,
        *,
        excluded_rows: Sequence[int],
        available_only: bool,
        wanted_categories: Sequence[int] | None,
        unwanted_categories: Sequence[int],
        max_per_category: int,
        min_price: float | None = None,
        max_price: float | None = None,
        merchandising: Merchandising | None = None,
    ) -> tuple[list[int], list[float], list[int]]:
        """An answer without a user vector (cold start, fallback) from ranked lists.

        ``lists``: (rows best first, scores, reason code, quota), taken in turn after the
        pins, each re-weighed by the rules (ties keep the list's order) and filtered: slots,
        scores and reason codes (a list's own code, or ``REASON_PROMOTED``).
        """
    def similar(self, row: int, k: int) -> tuple[list[int], list[float]]:
        """The ``k`` rows most similar to ``row`` (cosine), best first, with their cosines."""
    def similar_items(
        self,
        row: int | None,
        k: int,
        *,
        covisits: tuple[_Rows, npt.NDArray[np.float64]] | None,
        available_only: bool,
        wanted_categories: Sequence[int] | None,
        unwanted_categories: Sequence[int],
        min_price: float | None = None,
        max_price: float | None = None,
        merchandising: Merchandising | None = None,
    ) -> tuple[list[int], list[float], list[int]]:
        """Items to show next to ``row`` (None: an item without factors), pins first.

        Slots, scores and reasons (``REASON_PROMOTED``, ``REASON_VIEWED_TOGETHER``,
        ``REASON_SIMILAR``); every row that passes the filters is scored by 0.5 x cosine +
        co-visitation weight and re-weighed by the rules.
        """

REASON_VIEWED_TOGETHER: Final[int]
REASON_SIMILAR: Final[int]

# --- merchandising.rs: the shop's rules and the exploration of new items ---------------------

NO_BRAND: Final[int]
"""Brand code of an item without brand."""
REASON_NEW_ITEM: Final[int]
"""An explored item without events: "new in <category>"."""
REASON_PROMOTED: Final[int]
"""A pinned item."""
BOOSTED_CANDIDATES_MAX: Final[int]

class Merchandising:
    """The shop's rules active at ``now_s``, compiled for ``size`` rows and the new items.

    ``weights``: (``"item"`` | ``"category"`` | ``"brand"``, slot or code, factor,
    starts_at_s, ends_at_s); ``pins``: (slot, position from 1, starts_at_s, ends_at_s); ±inf
    for an open end. A slot >= ``size`` is a new item (arrays newest first). Recompile from
    ``valid_until_s`` on.
    """

    def __init__(
        self,
        size: int,
        category_codes: npt.NDArray[np.int32],
        brand_codes: npt.NDArray[np.int32],
        new_category_codes: npt.NDArray[np.int32],
        new_brand_codes: npt.NDArray[np.int32],
        new_prices: npt.NDArray[np.float64],
        new_unavailable: npt.NDArray[np.bool_],
        weights: Sequence[tuple[str, int, float, float, float]],
        pins: Sequence[tuple[int, int, float, float]],
        now_s: float,
    ) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def new_items(self) -> int: ...
    @property
    def valid_until_s(self) -> float: ...
    @property
    def boosted_rows(self) -> list[int]: ...
    def factors(self) -> list[float]:
        """The factor of each slot: rows, then new items."""

# --- popularity_shift.rs ---------------------------------------------------------------------

def js_divergence(p: Mapping[str, int], q: Mapping[str, int]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two count distributions."""

class PopularityShift:
    """Windowed JS divergence of item popularity, watched by Page-Hinkley (threshold 0.3)."""

    window: int
    last_divergence: float
    def __init__(self, window: int = 2000, min_windows: int = 10) -> None: ...
    @property
    def current(self) -> dict[str, int]: ...
    @property
    def previous(self) -> dict[str, int]: ...
    @property
    def detector(self) -> PageHinkley:
        """The Page-Hinkley test on the divergences (a copy)."""
    def add(self, item_id: str) -> float | None:
        """Count one interaction; at the end of a window the divergence if it alarmed."""
    def to_state(self) -> bytes: ...
    @staticmethod
    def from_state(data: bytes) -> PopularityShift: ...

# --- events.rs -------------------------------------------------------------------------------

def decode_event_fast(
    payload: bytes, now_s: float, max_future_skew_s: float
) -> dict[str, object] | None:
    """The native fast path alone: the event's fields if it is certainly valid, else None.

    Fields as ``msgspec.structs.asdict(event)`` of ``freshrec.events.Event`` has them, but
    ``ts`` as ``ts_us`` (unix microseconds), ``ts_s`` (``event.ts.timestamp()``, bit for bit)
    and ``utc_offset_s``; ``context``/``profile`` are dicts or None. ``now_s`` is read as
    ``datetime.fromtimestamp(now_s, UTC)``.
    """

def decode_message(
    payload: bytes, now_s: float, max_future_skew_s: float
) -> dict[str, object] | str:
    """The worker's decoder: the fast path, else ``freshrec.events.decode_message`` as judge.

    An event's fields (as :func:`decode_event_fast`), a tombstone's as ``{"type": "erase",
    "user_id", "erasure_id", "ts_us"}``, or the dead-letter reason, byte for byte
    ``errors_as_reason(decode_message(payload, now=..., max_future_skew_s=...))``.
    """

# --- pseudonym.rs ----------------------------------------------------------------------------

def user_pseudonym(user_id: str) -> str:
    """A user's pseudonym: 16 hex digits of BLAKE2b-64 over ``"freshrec-user:" + user_id``.

    Names a user where their id must not appear (dashboard, stream entries, the archive's
    erasure ledger).
    """

def invalid_reasons(
    payloads: list[bytes] | list[object], now_s: float, max_future_skew_s: float
) -> list[str | None]:
    """The worker's verdict on each payload: None for a valid event, else its reason.

    A payload is bytes or a Kafka message with ``value``; the reason is the dead-letter
    reason :func:`decode_message` gives, and a tombstone is refused (only events may enter
    where this judges: the bulk import). One call per batch.
    """

# --- dedup.rs --------------------------------------------------------------------------------

class EventDedup:
    """Event ids (as 64-bit hashes) of one user seen within a horizon of event time."""

    horizon_s: float
    max_ids: int
    newest_ts_s: float
    def __init__(self, horizon_s: float = 86_400.0, max_ids: int = 10_000) -> None: ...
    def is_duplicate(self, event_id: str, ts_s: float) -> bool: ...
    def __len__(self) -> int: ...
    def to_state(self) -> bytes: ...
    @staticmethod
    def from_state(
        state: bytes, horizon_s: float = 86_400.0, max_ids: int = 10_000
    ) -> EventDedup: ...

# --- covisitation.rs -------------------------------------------------------------------------

class CoVisitation:
    """The offline harness's item-to-item co-visitation over users' recent histories."""

    def __init__(
        self,
        half_life_s: float = 604_800.0,
        history: int = 5,
        neighbours: int = 50,
        session_gap_s: float = 10_800.0,
        recency_decay: float = 0.7,
        max_items: int = 200_000,
        max_users: int = 200_000,
    ) -> None: ...
    def learn(self, user_id: str, item_id: str, ts_s: float, weight: float = 1.0) -> None: ...
    def last_items(self, user_id: str) -> list[str]: ...
    def scores(self, user_id: str, now_s: float | None = None) -> dict[str, float]: ...
    def recommend(
        self, user_id: str, k: int, exclude: set[str] | None = None, now_s: float | None = None
    ) -> list[str]: ...
    @property
    def sizes(self) -> tuple[int, int]:
        """(items with neighbours kept, users with a history kept)."""
    @property
    def longest(self) -> tuple[int, int]:
        """(longest neighbour list, longest history)."""

# --- item_state.rs ---------------------------------------------------------------------------

class ItemConfig:
    """Half-lives and bounds of item state (from the settings)."""

    half_life_s: float
    trend_half_life_s: float
    trend_min_events: float
    covisit_half_life_s: float
    neighbour_capacity: int
    def __init__(
        self,
        half_life_s: float = 86_400.0,
        trend_half_life_s: float = 3_600.0,
        trend_min_events: float = 3.0,
        covisit_half_life_s: float = 604_800.0,
        neighbour_capacity: int = 100,
    ) -> None: ...

class ItemState:
    """One item's vector, update counts, popularities, neighbours and segment popularity."""

    item_id: str
    vector: Vector
    version: int
    popularity_log2: float
    short_popularity_log2: float
    last_ts_s: float
    covisit_version: int
    category_id: str | None
    segments: list[tuple[str, float]]
    neighbour_scores: list[tuple[str, float]]
    def __init__(self, item_id: str, params: IsgdParams, config: ItemConfig) -> None: ...
    def learn(
        self, user_vector: Vector, weight: float, ts_s: float, category_id: str | None = None
    ) -> None: ...
    def covisit(self, other_id: str, weight: float, ts_s: float) -> None: ...
    def segment_hit(self, segment: str, weight: float, ts_s: float) -> float: ...
    def trend_log2(self) -> float | None: ...
    def top_neighbours(self, m: int) -> list[tuple[str, float]]: ...
    def to_state(self) -> bytes: ...
    @staticmethod
    def from_state(state: bytes, params: IsgdParams, config: ItemConfig) -> ItemState: ...

# --- user_state.rs ---------------------------------------------------------------------------

class UserConfig:
    """Per-user bounds, horizons and drift policy (from the settings)."""

    window: int
    seen_max: int
    session_gap_s: float
    covisit_span: int
    drift_detection: bool
    def __init__(
        self,
        window: int = 50,
        seen_max: int = 500,
        dedup_horizon_s: float = 86_400.0,
        dedup_max_ids: int = 10_000,
        session_gap_s: float = 1800.0,
        covisit_span: int = 5,
        recalibration: UserRecalibrationConfig | None = None,
    ) -> None: ...

ItemUpdateTuple = tuple[str, bytes, float, float, str | None]
CoVisitTuple = tuple[str, tuple[str, ...], tuple[float, ...], float]

class UserState:
    """One user's state (the user model's, with its hyperparameters) for tests and tools."""

    user_id: str
    vector: Vector
    version: int
    duplicates: int
    dedup_ids: int
    segment: str
    last_error: float
    last_surprise: float | None
    session: tuple[int, float, float, int, list[str]]
    seen: list[str]
    purchased: list[str]
    counts: dict[str, int]
    last_ts_s: float
    def __init__(self, user_id: str, params: IsgdParams, config: UserConfig) -> None: ...
    def recent_items(self) -> list[str]: ...
    def is_duplicate(self, event_id: str, ts_s: float) -> bool: ...
    def learn(
        self,
        item_id: str,
        item_vector: Vector,
        event_type: str,
        ts_s: float,
        category_id: str | None = None,
        boost: float = 1.0,
        segment: str = "",
    ) -> tuple[ItemUpdateTuple, list[CoVisitTuple]]: ...
    def observe(self, item_id: str, event_type: str, ts_s: float) -> None: ...
    def check_drift(
        self, item_vector: Callable[[str], Vector | None]
    ) -> dict[str, object] | None: ...
    def record(self, event_ts_s: float, written_at_s: float) -> tuple[int, bytes]: ...
    def to_state(self) -> bytes: ...
    @staticmethod
    def from_state(state: bytes, params: IsgdParams, config: UserConfig) -> UserState: ...

# --- item_vectors.rs -------------------------------------------------------------------------

class ItemVectors:
    """The worker-local replica of item vectors the user model reads."""

    ids: list[str]
    def __init__(self, params: IsgdParams) -> None: ...
    def remote(self, item_ids: list[str]) -> list[str]: ...
    def apply_staged(self) -> int: ...
    def apply(self, item_ids: list[str], matrix: bytes) -> int: ...
    def get(self, item_id: str) -> Vector: ...
    def __len__(self) -> int: ...

# --- live_quality.rs -------------------------------------------------------------------------

class LiveQuality:
    """Sampled test-then-train HR@10 of the live model and the global drift policy on it."""

    window_recall: float
    evaluated: int
    def __init__(self, sample_every: int = 10, negatives: int = 99, window: int = 1000) -> None: ...
    def sampled(self, event_id: str) -> bool: ...

# --- messages.rs: the flow's message vocabulary ----------------------------------------------

class ItemShardBatch:
    """Everything one batch does to the items of one shard (the item model's input)."""

    shard: int
    item_ids: list[str]
    def __len__(self) -> int: ...

class ItemsOut:
    """What one batch changed of one shard's items (the item model's output)."""

    items: list[tuple[str, int | None, bytes | None, list[tuple[str, float]]]]
    def __len__(self) -> int: ...

class DeadLetter:
    """A message that could not be used, and why."""

    payload: bytes
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    def __init__(
        self,
        payload: bytes,
        reason: str,
        source_topic: str,
        source_partition: int,
        source_offset: int,
        key: bytes | None = None,
    ) -> None: ...

class ArchiveRow:
    """A valid event (its payload) with its enrichment, for the Parquet archive."""

    user_id: str
    payload: bytes
    device_class: str
    tod_bucket: str
    weekday: int
    local_hour: int
    segment: str

class UserDelta:
    """Everything one user's batch produced: the user model's one output per call."""

    user_id: str
    erasures: list[str]
    """Erasure ids of the batch's tombstones: the user was erased (before the rest)."""
    record: tuple[int, bytes] | None
    parked: bytes | None
    dead_letters: list[DeadLetter]
    archive_rows: list[ArchiveRow]
    alarms: list[tuple[str, str, str]]
    counts: tuple[int, int, int]

# --- the keyed models (Bytewax StatefulBatchLogic by duck typing) ----------------------------

LogicReturn = tuple[list[object], bool]

class _Logic:
    def on_batch(self, values: list[object]) -> LogicReturn: ...
    def snapshot(self) -> bytes: ...
    def notify_at(self) -> object: ...
    def on_notify(self) -> LogicReturn: ...
    def on_eof(self) -> LogicReturn: ...

class ParkedUsers:
    """The process-wide index of users whose state is parked in Redis."""

    def __init__(self) -> None: ...
    def add(self, user_ids: list[str]) -> None: ...
    def __contains__(self, user_id: str) -> bool: ...
    def __len__(self) -> int: ...

class UserModel(_Logic): ...

class UserModelFactory:
    def __init__(
        self,
        params: IsgdParams,
        config: UserConfig,
        *,
        replica: ItemVectors,
        quality: LiveQuality | None,
        parked: ParkedUsers,
        refresh_items: Callable[[], object],
        refresh_interval_s: float,
        fetch_parked: Callable[[str], bytes | None],
        idle_ttl_s: float,
        max_future_skew_s: float,
        archive: bool = False,
    ) -> None: ...
    def __call__(self, resume: bytes | None = None) -> UserModel: ...

class ItemModel(_Logic):
    """The keyed operator over one shard of the items."""

    def __len__(self) -> int: ...

class ItemRouter:
    """The flow's item_batches step: a batch's item work, one message per item shard."""

    shards: int
    def __init__(self, shards: int) -> None: ...
    def shard_of(self, item_id: str) -> int: ...
    def __call__(self, batch: list[object]) -> list[tuple[str, ItemShardBatch]]: ...

class ItemModelFactory:
    def __init__(
        self,
        params: IsgdParams,
        config: ItemConfig,
        top_m: int,
        replica: ItemVectors | None = None,
        popular_listed: int | None = None,
    ) -> None:
        """``popular_listed``: items each shard lists in the popularity ranking (None: all)."""
    def __call__(self, resume: bytes | None = None) -> ItemModel: ...

class FeedbackBatch: ...
class FeedbackOut: ...
class FeedbackModel(_Logic): ...

class FeedbackModelFactory:
    def __init__(self, window_s: float, keep: int) -> None: ...
    def __call__(self, resume: bytes | None = None) -> FeedbackModel: ...

class PopularitySample:
    @staticmethod
    def from_items(items: list[str]) -> PopularitySample: ...

class ShiftAlarms: ...
class PopularityShiftModel(_Logic): ...

class PopularityShiftModelFactory:
    def __init__(self, window: int) -> None: ...
    def __call__(self, resume: bytes | None = None) -> PopularityShiftModel: ...

# --- routing.rs ------------------------------------------------------------------------------

def key_by_user(batch: list[object]) -> list[tuple[str, tuple[str, object]]]: ...
def feedback_batches(batch: list[object]) -> list[tuple[str, FeedbackBatch]]: ...
def popularity_samples(batch: list[object]) -> list[tuple[str, PopularitySample]]: ...
def dead_letters(batch: list[object]) -> list[DeadLetter]: ...
def archive_rows(batch: list[object]) -> list[ArchiveRow | str]:
    """The batch's archive rows in order; an erased user as their id, before later rows."""

# --- resp.rs ---------------------------------------------------------------------------------

class RespArgs:
    """Arguments already encoded as RESP bulk strings (``len()`` of them)."""

    def __len__(self) -> int: ...

class RespBatch:
    """Redis commands encoded in RESP, to send in one write; ``len()`` replies to read."""

    def __init__(self) -> None: ...
    def command(self, *args: str | bytes | int | RespArgs) -> None: ...
    def __len__(self) -> int: ...
    def encoded(self) -> bytes: ...

class WritePlan:
    """The newer part of a batch's writes, as arguments of variadic Redis commands."""

    user_keys: RespArgs
    user_records: RespArgs
    item_factors: RespArgs
    item_versions: RespArgs
    changed_items: int
    changed_item_ids: bytes
    popularity: RespArgs
    unlisted: RespArgs
    trending: RespArgs
    untrending: RespArgs
    categories: RespArgs
    neighbour_records: RespArgs
    neighbour_versions: RespArgs

class StateWrites:
    """A batch's writes to Redis, coalesced to the newest version per key."""

    erased: list[tuple[str, str]]
    """(user id, pseudonym) of users erased in the batch: deleted before the rest is written."""
    erasure_ids: list[str]
    item_ids: RespArgs
    neighbour_ids: RespArgs
    arrivals: list[float]
    parked: list[tuple[str, bytes]]
    segment_scores: list[tuple[str, RespArgs]]
    holdouts: list[tuple[str, bytes, str, str]]
    """(key, user vector before the event, item id, user pseudonym)."""
    feedback: list[tuple[str, str, float, int, int, int]]
    alarms: list[tuple[str, str, str, str | None]]
    """(kind, scope, detail, pseudonym of the user of a per-user alarm)."""
    applied: int
    duplicates: int
    dead_letters: int
    user_alarms: int
    global_alarms: int
    ctr_alarms: int
    shift_alarms: int
    def user_record_keys(self, prefix: str) -> RespArgs:
        """The record keys (``prefix`` + id) of the users whose stored versions plan needs."""
    def plan(
        self,
        stored_users: list[bytes | None],
        stored_items: list[bytes | None],
        stored_neighbours: list[bytes | None],
        user_key_prefix: str,
        neighbour_key_prefix: str,
    ) -> WritePlan: ...

def collect_writes(batch: list[object]) -> StateWrites: ...

# --- timing.rs -------------------------------------------------------------------------------

def enable_timing(on: bool) -> None: ...
def native_time() -> dict[str, tuple[float, int]]:
    """Part → (seconds spent in its calls, calls) since timing was enabled."""

# --- stage_costs.rs (for benchmarks/bench_pipeline.py) -----------------------------------------

def stage_costs(
    payloads: Sequence[bytes],
    params: IsgdParams,
    user_config: UserConfig,
    item_config: ItemConfig,
    top_m: int,
    repeats: int = 5,
    batch_size: int = 1000,
    sample_every: int = 10,
    max_future_skew_s: float = 300.0,
    item_shards: int = 64,
) -> dict[str, object]:
    """µs per event of each native stage of the flow alone, timed in Rust loops.

    Best of ``repeats`` over the Kafka values ``payloads`` (events in flow order, keyed by
    user). Returns ``{"stage_us_per_event": {...}, "detail_us_per_event": {...}, "events",
    "valid_events", "repeats"}``. Stages, in the flow's order and driving the flow's own
    functions: ``"decode + validate"``, ``"enrichment"``, ``"user state"`` (dedup, session,
    window, ISGD user half, sampled HR@10 when ``sample_every`` > 0, drift check, record, one
    call per user and batch), ``"item_batches"``, ``"item model"`` (``ItemModel.apply`` per
    item and batch) and ``"collect_writes"``. Details: parts of those stages, each timed alone
    (not to be added to the stages).
    """
