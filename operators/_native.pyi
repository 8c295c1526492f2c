"""Types of the native core (``operators/src/``); one section per Rust module."""

from collections.abc import Mapping, Sequence
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
