"""Recommendation feedback through the flow: CTR and conversions per model and segment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from freshrec.events import Event
from operators.enrich import enrich, segment_key
from state.store import RedisStore
from tests.conftest import run_flow_on, unique_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def feedback_events() -> list[Event]:
    events: list[Event] = []

    def add(user: str, type_: str, minutes: float, rec: str | None) -> None:
        events.append(
            Event(
                event_id=f"fb-{len(events)}",
                user_id=user,
                item_id="i1",
                type=type_,  # type: ignore[arg-type]
                ts=T0 + timedelta(minutes=minutes),
                recommendation_id=rec,
            )
        )

    for u in range(20):  # window 1, model v7: 20 impressions, 5 clicks, 2 purchases
        add(f"u{u}", "rec_impression", 1, "v7.aaa")
    for u in range(5):
        add(f"u{u}", "rec_click", 2, "v7.aaa")
    for u in range(2):
        add(f"u{u}", "purchase", 3, "v7.aaa")
    for u in range(10):  # window 2 (5 min later), model v8: 10 impressions, 1 click
        add(f"u{u}", "rec_impression", 6, "v8.bbb")
    add("u0", "rec_click", 7, "v8.bbb")
    add("u1", "view", 7, None)  # no recommendation id: not feedback
    events.append(events[0])  # an SDK retry of an impression: counted once
    return events


def test_feedback_windows_in_redis(stack, tmp_path) -> None:
    settings = unique_settings(stack, tmp_path)
    events = feedback_events()
    run_flow_on(settings, events, 7)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    segment = segment_key(enrich(events[0]))
    assert {("v7", segment), ("v8", segment)} <= set(store.feedback_keys())
    [v7] = store.feedback("v7", segment)
    assert (v7.impressions, v7.clicks, v7.conversions) == (20, 5, 2)
    assert v7.ctr == 0.25 and v7.conversion_rate == 0.4
    [v8] = store.feedback("v8", segment)
    assert (v8.impressions, v8.clicks, v8.conversions) == (10, 1, 0)
    assert v8.start_s - v7.start_s == settings.feedback_window_s
