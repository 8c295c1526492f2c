"""Does one add-to-cart change what a new user is shown next? On the real stack, Taobao data.

    python benchmarks/bench_responsiveness.py [--users 100] [--warmup 5000] [--seed 7]
        [--json OUT]

Starts the embedded stack, the worker and the API, replays the head of the Taobao log through
the API (shifted to end now, as a live shop's history would), then for each of ``--users``
random new users: they view 3 items drawn at random from the replayed catalogue; their answer
(top 10) is taken; they add to cart a random catalogue item outside that top 10 (and not
viewed); the next answer is taken. Each answer is taken once the worker has applied the
user's events and the API ranks with the item matrix written after them (``fresh_answer`` of
``live_quality.py``). Prints the share of trials whose next answer shows other items (as a
set), and the share showing other items or other explanations (the goal: every trial).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.live_quality import fresh_answer  # noqa: E402
from benchmarks.served_model import AppliedWatch  # noqa: E402
from freshrec import processes  # noqa: E402
from freshrec.client import Client  # noqa: E402
from freshrec.datasets import load_taobao  # noqa: E402
from freshrec.events import Event  # noqa: E402
from freshrec.replay import iter_events  # noqa: E402
from freshrec.settings import Settings  # noqa: E402
from serving.schemas import Recommendations  # noqa: E402
from state.store import RedisStore  # noqa: E402

VIEWS = 3
K = 10


@dataclass(frozen=True)
class Trial:
    """One new user: what they viewed, the cart item, and the two answers."""

    user_id: str
    viewed: list[str]
    cart: str
    before: list[tuple[str, str]]
    """(item, reason) of the answer after the views."""
    after: list[tuple[str, str]]
    """(item, reason) of the next answer, after the cart."""

    @property
    def items_changed(self) -> bool:
        return {i for i, _ in self.before} != {i for i, _ in self.after}

    @property
    def shown_changed(self) -> bool:
        """Other items or other explanations (a mere reordering does not count)."""
        return set(self.before) != set(self.after)


def _pairs(answer: Recommendations) -> list[tuple[str, str]]:
    return [(item.item_id, item.reason) for item in answer.items]


def run_trials(
    settings: Settings, api_url: str, catalogue: Sequence[str], users: int, seed: int
) -> list[Trial]:
    """``users`` trials, one new user after another (so each pair of answers brackets only
    that user's own cart event)."""
    if len(catalogue) < VIEWS + K + 1:
        raise ValueError("the catalogue is too small for a trial")
    rng = np.random.default_rng(seed)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    watch = AppliedWatch()
    trials = []
    tag = uuid.uuid4().hex[:6]
    with Client(api_url) as client:
        for n in range(users):
            user_id = f"new-{tag}-{n}"
            viewed = [catalogue[i] for i in rng.choice(len(catalogue), VIEWS, replace=False)]
            now = datetime.now(UTC)
            views = [
                Event(
                    event_id=f"{user_id}-view-{j}",
                    user_id=user_id,
                    item_id=item,
                    type="view",
                    ts=now - timedelta(seconds=VIEWS - j),
                )
                for j, item in enumerate(viewed)
            ]
            client.send(views)
            watch.sent(views)
            before, _ = fresh_answer(client, store, watch, user_id, K)
            shown = {item.item_id for item in before.items} | set(viewed)
            cart = next(
                catalogue[i] for i in rng.permutation(len(catalogue)) if catalogue[i] not in shown
            )
            event = Event(
                event_id=f"{user_id}-cart",
                user_id=user_id,
                item_id=cart,
                type="add_to_cart",
                ts=datetime.now(UTC),
            )
            client.send([event])
            watch.sent([event])
            after, _ = fresh_answer(client, store, watch, user_id, K)
            trials.append(Trial(user_id, viewed, cart, _pairs(before), _pairs(after)))
    store.client.close()
    return trials


def summarise(trials: Sequence[Trial], seed: int) -> dict[str, object]:
    """Shares of trials whose next answer changed (items; items or explanations)."""
    n = len(trials)
    items = sum(t.items_changed for t in trials)
    shown = sum(t.shown_changed for t in trials)
    reasons = sum(
        any(r.startswith("because you viewed") for _, r in t.after) for t in trials
    )  # fmt: skip
    return {
        "trials": n,
        "seed": seed,
        "items_changed_share": items / n if n else 0.0,
        "items_or_explanations_changed_share": shown / n if n else 0.0,
        "unchanged_trials": [t.user_id for t in trials if not t.shown_changed],
        "mean_items_replaced": float(
            np.mean([len({i for i, _ in t.before} - {i for i, _ in t.after}) for t in trials])
        )
        if n
        else 0.0,
        "after_answers_with_because_you_viewed_share": reasons / n if n else 0.0,
        "trials_detail": [asdict(t) for t in trials],
    }


def print_summary(result: dict[str, object]) -> None:
    print(
        f"{result['trials']} new users (seed {result['seed']}): 3 views, then add to cart an "
        "item outside their top 10; the next answer (once the worker applied the cart):"
    )
    print(f"  other items (as a set)            {result['items_changed_share']:.1%}")
    print(
        f"  other items or explanations       {result['items_or_explanations_changed_share']:.1%}"
    )
    print(f"  items replaced per answer, mean   {result['mean_items_replaced']:.1f} of {K}")
    print(
        f"  next answers explaining an item by a viewed one "
        f"{result['after_answers_with_because_you_viewed_share']:.1%}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5000, help="Taobao events replayed first")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    frame = load_taobao(limit=args.warmup)
    history = list(iter_events(frame, id_prefix="taobao-", event_time="ends_now"))
    catalogue = sorted({e.item_id for e in history})
    run_dir = Path(tempfile.mkdtemp(prefix="freshrec-responsiveness-"))
    with processes.embedded_pipeline(run_dir) as pipeline:
        trials = replay_then_try(
            pipeline.settings, pipeline.api_url, history, catalogue, args.users, args.seed
        )
    result = summarise(trials, args.seed)
    print_summary(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def replay_then_try(
    settings: Settings,
    api_url: str,
    history: Sequence[Event],
    catalogue: Sequence[str],
    users: int,
    seed: int,
) -> list[Trial]:
    """Replay ``history`` through the API, wait until it is applied, then run the trials."""
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    watch = AppliedWatch()
    with Client(api_url, batch_size=500) as client:
        for at in range(0, len(history), 500):
            client.send(history[at : at + 500])
    watch.sent(history)
    watch.wait(store)
    store.client.close()
    return run_trials(settings, api_url, catalogue, users, seed)


if __name__ == "__main__":
    raise SystemExit(main())
