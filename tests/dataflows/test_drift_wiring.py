"""Drift in the live flow: a user whose taste flips is detected, refit and shown as an alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from freshrec.events import Event
from operators import user_pseudonym
from state.store import RedisStore
from tests.conftest import run_flow_on, unique_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def taste_flip_events() -> list[Event]:
    """40 users share taste A; the drifter then switches to items nobody else touches."""
    events = []
    n = 0
    for rnd in range(60):
        for u in range(40):
            item = f"a{(rnd + u) % 12}"
            events.append(
                Event(
                    event_id=f"e{n}",
                    user_id=f"u{u}",
                    item_id=item,
                    type="view",
                    ts=T0 + timedelta(seconds=n),
                )
            )
            n += 1
    for rnd in range(40):
        events.append(
            Event(
                event_id=f"e{n}",
                user_id="u0",
                item_id=f"b{rnd % 8}",
                type="view",
                ts=T0 + timedelta(seconds=n),
            )
        )
        n += 1
    return events


def test_taste_flip_raises_a_user_alarm_and_refits(stack, tmp_path) -> None:
    # The drifter's loss rises only against item vectors the others have trained: the
    # replica must see them (the native flow runs the whole stream in a few tens of ms, less
    # than the default refresh interval).
    settings = unique_settings(stack, tmp_path, item_refresh_ms=1)
    events = taste_flip_events()
    run_flow_on(settings, events, 40)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    alarms = store.alarms(100)
    user_alarms = [a for a in alarms if a["scope"] == "user"]
    # The dashboard shows alarms: a user is named by their pseudonym, never by their id.
    drifter = user_pseudonym("u0")
    assert any(a["detail"].startswith(f"user #{drifter}:") for a in user_alarms), alarms
    assert all(a["user"] == a["detail"].split(":")[0].removeprefix("user #") for a in user_alarms)
    assert not any("u0" in a["detail"].split() for a in user_alarms)
    # Stable users with an unchanging taste raise (almost) no alarms.
    others = {a["user"] for a in user_alarms} - {drifter}
    assert len(others) <= 2, others


def test_drift_detection_can_be_switched_off(stack, tmp_path) -> None:
    settings = unique_settings(stack, tmp_path, drift_detection=False)
    run_flow_on(settings, taste_flip_events(), 40)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    assert [a for a in store.alarms(100) if a["scope"] == "user"] == []
