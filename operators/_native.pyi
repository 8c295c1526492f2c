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

def decode_event(payload: bytes, now_s: float, max_future_skew_s: float) -> dict[str, object] | str:
    """The worker's decoder: the fast path, else ``freshrec.events.decode_event`` as judge.

    The event's fields (as :func:`decode_event_fast`), or the dead-letter reason, byte for
    byte ``errors_as_reason(decode_event(payload, now=..., max_future_skew_s=...))``.
    """
