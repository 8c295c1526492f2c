"""A new user's add-to-cart changes their next answer: 100 random new users on Taobao data.

Against the real pipeline (the session's broker and Redis, the worker and the API as
processes): the head of the Taobao log is replayed through the API, then each new user views 3
random items and adds to cart an item outside their top 10 (``benchmarks/bench_responsiveness.py``,
which prints the same shares). Most next answers must show other items, and every one other
items or other explanations — which the live model does not do yet (see the xfail).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.bench_responsiveness import Trial, replay_then_try, summarise
from freshrec.datasets import load_taobao
from freshrec.processes import running_pipeline
from freshrec.replay import iter_events
from freshrec.stack import LocalStack
from tests.conftest import unique_settings

pytestmark = pytest.mark.integration

USERS = 100
SEED = 7


@pytest.fixture(scope="module")
def trials(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Trial]]:
    history = list(iter_events(load_taobao(limit=3000), id_prefix="taobao-", event_time="ends_now"))
    catalogue = sorted({e.item_id for e in history})
    run_dir = tmp_path_factory.mktemp("responsiveness")
    with running_pipeline(unique_settings(stack, run_dir), run_dir) as pipe:
        yield replay_then_try(pipe.settings, pipe.api_url, history, catalogue, USERS, SEED)


def test_most_next_answers_show_other_items(trials: list[Trial]) -> None:
    result = summarise(trials, SEED)
    print(f"seed {SEED}: {result['items_changed_share']:.1%} of next answers show other items")
    assert result["trials"] == USERS
    for trial in trials:
        assert len(trial.before) == len(trial.after) == 10, trial.user_id
        assert trial.cart not in {item for item, _ in trial.before}
        assert trial.cart not in trial.viewed
        assert trial.cart not in {item for item, _ in trial.after}  # carted: excluded
    assert result["items_changed_share"] > 0.5, f"seed {SEED}: {result['items_changed_share']}"


@pytest.mark.xfail(
    strict=True,
    reason="issue 15: measured 93% on 2026-12-03 (seed 7, 100 users); in the other 7% the "
    "cart only re-ranks the same ten items with the same reasons. Remove this mark when the "
    "model does.",
)
def test_every_next_answer_shows_other_items_or_explanations(trials: list[Trial]) -> None:
    unchanged = [t.user_id for t in trials if not t.shown_changed]
    assert not unchanged, f"seed {SEED}: unchanged items and explanations for {unchanged}"
