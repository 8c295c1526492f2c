"""A new user's add-to-cart changes their next answer: ≥ 100 random new users on Taobao data.

Against the real pipeline (the session's broker and Redis, the worker and the API as
processes): the head of the Taobao log is replayed through the API, then each new user views 3
random items and adds to cart an item outside their top 10 (``benchmarks/bench_responsiveness.py``,
which prints the same shares). Every next answer must show other items or other explanations,
most of them other items.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_responsiveness import replay_then_try, summarise
from freshrec.datasets import load_taobao
from freshrec.replay import iter_events
from tests.conftest import running_pipeline

pytestmark = pytest.mark.integration

USERS = 100
SEED = 7


def test_an_add_to_cart_changes_the_next_answer(make_settings, tmp_path: Path) -> None:
    history = list(iter_events(load_taobao(limit=3000), id_prefix="taobao-", event_time="ends_now"))
    catalogue = sorted({e.item_id for e in history})
    settings = make_settings()
    with running_pipeline(settings, tmp_path) as pipe:
        trials = replay_then_try(pipe.settings, pipe.api_url, history, catalogue, USERS, SEED)
    result = summarise(trials, SEED)
    print(f"seed {SEED}: {result['items_changed_share']:.1%} of answers show other items")

    assert result["trials"] == USERS
    for trial in trials:
        assert len(trial.before) == len(trial.after) == 10, trial.user_id
        assert trial.cart not in {item for item, _ in trial.before}
        assert trial.cart not in trial.viewed
    unchanged = [t for t in trials if not t.shown_changed]
    assert not unchanged, f"seed {SEED}: unchanged answers for {[t.user_id for t in unchanged]}"
    assert result["items_changed_share"] > 0.5, f"seed {SEED}: {result['items_changed_share']}"
