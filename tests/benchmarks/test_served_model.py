"""The harness's served model: the production flow and Recommender in process, in lockstep."""

from __future__ import annotations

import pytest
import redis

from benchmarks.quality import load_events
from benchmarks.served_model import ServedModel
from state.store import RedisStore

pytestmark = pytest.mark.integration


def test_answers_once_the_flow_applied_everything_then_drops_its_namespace(make_settings) -> None:
    settings = make_settings()
    events = load_events("taobao", None, "stream", 400)
    model = ServedModel(settings)
    prefix = model.settings.redis_prefix
    try:
        for e in events:
            model.learn(e)
        user = events[-1].user
        answer = model.answer(user, 10)
        record = model.store.get_user(user)
        assert record is not None and record.events == sum(e.user == user for e in events)
        assert len(answer.items) == 10 and not answer.fallback
        assert not {i.item_id for i in answer.items} & set(record.seen)  # exclude=seen
        assert model.recommend(events[-1], 10, set()) == [i.item_id for i in answer.items]
    finally:
        model.close()
    store = RedisStore.from_url(settings.redis_url, prefix, settings.factors)
    assert store.get_user(events[-1].user) is None


def test_a_private_redis_and_the_none_filter() -> None:
    events = load_events("taobao", None, "stream", 200)
    model = ServedModel(exclude="none")
    try:
        for e in events:
            model.learn(e)
        assert len(model.recommend(events[0], 20, set())) == 20
        assert model.filters.exclude == "none"
    finally:
        model.close()
    with pytest.raises(redis.ConnectionError):  # the private Redis is gone
        model.store.ping()
