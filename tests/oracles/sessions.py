"""A user's current session: consecutive events with gaps shorter than ``gap_s``.

Sessions are per-user state with the rest of the user (Bytewax's ``SessionWindower`` never
frees per-key state, upstream issue #577), cut by *event* time so replays match live runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Session:
    """The current (or last) session of a user; immutable."""

    session_no: int
    """1 for the user's first session, then counting up."""
    start_ts_s: float
    last_ts_s: float
    event_count: int
    items: tuple[str, ...]
    """Distinct items of the session, in first-seen order (bounded)."""

    @property
    def duration_s(self) -> float:
        """Time from the first to the last event."""
        return self.last_ts_s - self.start_ts_s


NO_SESSION = Session(0, float("-inf"), float("-inf"), 0, ())


def advance(
    session: Session, item_id: str, ts_s: float, gap_s: float = 1800.0, max_items: int = 50
) -> Session:
    """The session after one more event at ``ts_s`` (a new one if the gap was too long).

    Events slightly out of order (``ts_s`` before ``last_ts_s``) join the current session.
    """
    if gap_s <= 0:
        raise ValueError(f"gap_s must be > 0, got {gap_s}")
    if session.event_count == 0 or ts_s - session.last_ts_s > gap_s:
        return Session(session.session_no + 1, ts_s, ts_s, 1, (item_id,))
    items = session.items
    if item_id not in items:
        items = (items + (item_id,))[-max_items:]
    return Session(
        session.session_no,
        min(session.start_ts_s, ts_s),
        max(session.last_ts_s, ts_s),
        session.event_count + 1,
        items,
    )
