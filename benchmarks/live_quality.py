"""What the API serves, scored test-then-train, next to the offline harness on the same events.

    python benchmarks/live_quality.py [--dataset movielens] [--warmup 5000] [--events 500]
        [--json OUT]

Starts the embedded stack (broker, Redis), the worker and the API as real processes, replays
the first ``--warmup`` events of the log through the ingest API, then walks on through the log
event by event: before each event the harness scores (the ``stream`` protocol of
``quality.py``: the user has an earlier event and has not touched the item), it asks the API
for that user's top 10 (``GET /v1/users/{id}/recommendations?k=10``), and only then posts the
event (test-then-train). ``--events`` counts the scored events.

The pipeline is asynchronous, so before each request the benchmark waits until the worker has
applied every event posted so far — each user's record counts all their events and each item's
version all interactions with it (``AppliedWatch``) — and re-asks until the answer's
``model_version`` (the item-change sequence the API ranked with) has reached the one Redis
held after those writes and its ``user_events`` count all the user's events (the API's copy
of the record follows Redis's push). The popular and trending lists the API re-reads once a second are
not waited for. The offline side runs the same events through the harness's in-process
served model (``benchmarks/served_model.py``: the same flow and ranker, in lockstep) and the
harness's other models; the noise is a bootstrap over events, and live against offline is
compared event by event (paired).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.quality import (  # noqa: E402
    DEEP,
    SERVED,
    Event,
    K,
    bootstrap_ci,
    build_models,
    evaluate,
    load_events,
    ranks_of,
    scored_events,
)
from benchmarks.served_model import AppliedWatch, ServedModel, stream_event  # noqa: E402
from freshrec import processes  # noqa: E402
from freshrec.client import Client  # noqa: E402
from freshrec.settings import Settings  # noqa: E402
from serving.schemas import Recommendations  # noqa: E402
from state.store import RedisStore  # noqa: E402

HARNESS_MODELS = ("popularity (decayed)", "co-visitation", "ISGD (Vinagre 2014)")
"""Harness models shown beside the served one (same events, same protocol)."""
FRESH_ANSWER_TIMEOUT_S = 10.0
CONTROL = (
    "before each request: wait until Redis shows every posted event applied (each user's "
    "record counts all their events, each item's version all interactions with it), then "
    "re-ask until the answer's model_version reaches Redis' item-change seq after those "
    "writes and its user_events all the user's events; the popular/trending lists (re-read by the API once a second) are not waited for"
)


def select_events(dataset: str, warmup: int, scored_n: int) -> tuple[list[Event], list[bool]]:
    """The first ``warmup`` events (learned, not scored), then events up to the
    ``scored_n``-th scored one; and which events are scored."""
    events = load_events(dataset, None, "stream", None)
    scored = scored_events(events, "stream", start=warmup)
    positions = [n for n, s in enumerate(scored) if s]
    if len(positions) < scored_n:
        raise ValueError(f"{dataset} has only {len(positions)} scored events after {warmup}")
    end = positions[scored_n - 1] + 1 if scored_n else warmup
    return events[:end], scored[:end]


@dataclass
class LiveRun:
    """The API's answers to the scored events, and what waiting for the worker cost."""

    lists: list[list[str]]
    waits: int
    waited_s: float
    rerequests: int
    seconds: float


def fresh_answer(
    client: Client,
    store: RedisStore,
    watch: AppliedWatch,
    user_id: str,
    k: int,
    lists_settle_s: float = 0.0,
) -> tuple[Recommendations, int]:
    """The API's answer once the worker has applied everything ``watch`` saw sent, and how
    many stale answers were asked again first: ranked with an older item matrix, or with the
    user's record as it was before its last events (the API's copy follows Redis's push)."""
    watch.wait(store)
    if lists_settle_s:
        time.sleep(lists_settle_s)
    seq = store.item_change_seq()
    events = watch.user_events[user_id]
    asked = time.monotonic()
    reasked = 0
    while True:
        answer = client.recommendations(user_id, k=k)
        if answer.model_version >= seq and answer.user_events >= events:
            return answer, reasked
        if time.monotonic() - asked > FRESH_ANSWER_TIMEOUT_S:
            raise TimeoutError(
                f"the API still ranks with item seq {answer.model_version} and "
                f"{answer.user_events} of the user's {events} events "
                f"{FRESH_ANSWER_TIMEOUT_S} s after Redis reached them"
            )
        reasked += 1
        time.sleep(0.005)


def replay_live(
    settings: Settings,
    api_url: str,
    events: Sequence[Event],
    scored: Sequence[bool],
    lists_settle_s: float = 0.0,
) -> LiveRun:
    """Post the events through the API, asking for each scored one's top 10 first
    (``lists_settle_s``: also wait that long after the writes, for the ranked lists)."""
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    watch = AppliedWatch()
    lists: list[list[str]] = []
    rerequests = 0
    started = time.monotonic()
    pending: list[Any] = []
    with Client(api_url, batch_size=1000) as client:

        def post() -> None:
            for at in range(0, len(pending), 500):
                result = client.send(pending[at : at + 500])
                if result.accepted != len(pending[at : at + 500]):
                    raise RuntimeError(f"the API refused events: {result}")
            watch.sent(pending)
            pending.clear()

        for e, is_scored in zip(events, scored, strict=True):
            if is_scored:
                post()
                answer, reasked = fresh_answer(client, store, watch, e.user, DEEP, lists_settle_s)
                rerequests += reasked
                lists.append([item.item_id for item in answer.items])
            pending.append(stream_event(e))
        post()
    store.client.close()
    return LiveRun(lists, watch.waits, watch.waited_s, rerequests, time.monotonic() - started)


def _figures(lists: Sequence[Sequence[str]], targets: Sequence[Event], seed: int) -> dict[str, Any]:
    ranks = ranks_of([r[:K] for r in lists], [e.item for e in targets])
    hits = (ranks > 0).astype(float)
    users = [e.user for e in targets]
    per_user: dict[str, list[float]] = {}
    for user, hit in zip(users, hits, strict=True):
        per_user.setdefault(user, []).append(hit)
    user_recall = [float(np.mean(v)) for v in per_user.values()]
    return {
        "HR@10": float(hits.mean()) if hits.size else 0.0,
        "HR@10_ci95": bootstrap_ci(hits, seed=seed),
        # One held-out item per event: the harness's stream recall@10 is the hit rate.
        "recall@10": float(hits.mean()) if hits.size else 0.0,
        "recall@10_per_user": float(np.mean(user_recall)) if user_recall else 0.0,
        "recall@10_per_user_ci95": bootstrap_ci(user_recall, seed=seed),
        "scored_events": int(hits.size),
        "_hits": hits,
    }


def compare(
    targets: Sequence[Event],
    live_lists: Sequence[Sequence[str]],
    offline_lists: Sequence[Sequence[str]],
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Live and offline figures on the same events, and how far apart they are."""
    if not len(live_lists) == len(offline_lists) == len(targets):
        raise ValueError("live and offline must score the same events")
    live, offline = _figures(live_lists, targets, seed), _figures(offline_lists, targets, seed)
    a, b = live.pop("_hits"), offline.pop("_hits")
    diff = a - b
    rng = np.random.default_rng(seed)
    if diff.size:
        draws = rng.integers(0, diff.size, size=(n_boot, diff.size))
        boot = diff[draws].mean(axis=1)
        ci = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))
    else:
        ci = (0.0, 0.0)
    identical = [list(x[:K]) == list(y[:K]) for x, y in zip(live_lists, offline_lists, strict=True)]
    overlap = [
        len(set(x[:K]) & set(y[:K])) / K for x, y in zip(live_lists, offline_lists, strict=True)
    ]
    return {
        "live": live,
        "offline": offline,
        "difference": {
            "HR@10": float(diff.mean()) if diff.size else 0.0,
            "HR@10_ci95": ci,
            "agree_within_noise": ci[0] <= 0.0 <= ci[1],
        },
        "per_event": {
            "identical_top10_share": float(np.mean(identical)) if identical else 1.0,
            "mean_top10_overlap": float(np.mean(overlap)) if overlap else 1.0,
            "same_outcome_share": float(np.mean(a == b)) if a.size else 1.0,
            "live_only_hits": int(((a == 1) & (b == 0)).sum()),
            "offline_only_hits": int(((a == 0) & (b == 1)).sum()),
        },
    }


def measure(
    settings: Settings,
    api_url: str,
    events: Sequence[Event],
    scored: Sequence[bool],
    *,
    dataset: str = "movielens",
    harness: Sequence[str] = HARNESS_MODELS,
    seed: int = 0,
    lists_settle_s: float = 0.0,
) -> dict[str, Any]:
    """Live through ``api_url`` (a worker and API on ``settings``), then offline on the same
    events: the served model in process (on the same Redis, its own prefix) and ``harness``."""
    live = replay_live(settings, api_url, events, scored, lists_settle_s)
    targets = [e for e, s in zip(events, scored, strict=True) if s]
    offline_lists: list[list[str]] = []
    t0 = time.monotonic()
    evaluate(
        lambda: ServedModel(settings, name=SERVED),
        events,
        "stream",
        scored=scored,
        lists=offline_lists,
    )
    offline_s = time.monotonic() - t0
    result = compare(targets, live.lists, offline_lists, seed=seed)
    result.update(
        warmup_events=scored.index(True) if any(scored) else len(events),
        events_replayed=len(events),
        control={
            "how": CONTROL,
            "waits": live.waits,
            "mean_wait_ms": 1000 * live.waited_s / max(live.waits, 1),
            "stale_answers_reasked": live.rerequests,
            "lists_settle_s": lists_settle_s,
            "live_seconds": live.seconds,
            "offline_seconds": offline_s,
        },
    )
    rows = []
    makers = dict(build_models(dataset, "stream", len(events)))
    for name in harness:
        lists: list[list[str]] = []
        evaluate(makers[name], events, "stream", scored=scored, lists=lists)
        figures = _figures(lists, targets, seed)
        figures.pop("_hits")
        rows.append({"model": name, **figures})
    result["harness"] = rows
    return result


def print_report(result: dict[str, Any], title: str) -> None:
    live, offline, diff = result["live"], result["offline"], result["difference"]
    print(title)
    header = f"{'':<44} {'HR@10':>7} {'95% CI':>16} {'recall@10/user':>15} {'scored':>7}"
    print(header)
    print("-" * len(header))

    def line(name: str, f: dict[str, Any]) -> None:
        lo, hi = f["HR@10_ci95"]
        print(
            f"{name:<44} {f['HR@10']:>7.4f} [{lo:.4f}, {hi:.4f}] "
            f"{f['recall@10_per_user']:>15.4f} {f['scored_events']:>7,}"
        )

    line("live: API ← worker ← Kafka ← API", live)
    line(f"offline harness: {SERVED}", offline)
    for row in result["harness"]:
        line(f"offline harness: {row['model']}", row)
    lo, hi = diff["HR@10_ci95"]
    verdict = "agree within noise" if diff["agree_within_noise"] else "DISAGREE"
    per = result["per_event"]
    print(
        f"live − offline HR@10 {diff['HR@10']:+.4f}, paired bootstrap 95% CI [{lo:+.4f}, "
        f"{hi:+.4f}]: {verdict}. Same top 10 on {per['identical_top10_share']:.1%} of the "
        f"events (mean overlap {per['mean_top10_overlap']:.1%}), same hit/miss on {per['same_outcome_share']:.1%} (hits only live "
        f"{per['live_only_hits']}, only offline {per['offline_only_hits']})."
    )
    print(
        "recall@10 = HR@10 here (one held-out item per event, the harness's stream recall); "
        "recall@10/user = the share of each user's scored events hit, averaged over users."
    )
    c = result["control"]
    print(
        f"asynchrony controlled: {c['how']}. {c['waits']:,} waits, mean {c['mean_wait_ms']:.0f} ms; "
        f"{c['stale_answers_reasked']:,} answers re-asked; live {c['live_seconds']:.0f} s, "
        f"offline served model {c['offline_seconds']:.0f} s."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--dataset", default="movielens", help="movielens | taobao | diginetica")
    parser.add_argument("--warmup", type=int, default=5000, help="events replayed unscored first")
    parser.add_argument("--events", type=int, default=500, help="scored events")
    parser.add_argument("--seed", type=int, default=0, help="of the bootstrap")
    parser.add_argument(
        "--lists-settle-s",
        type=float,
        default=0.0,
        help="also wait this long before each request (1.1: the API has re-read the lists)",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    events, scored = select_events(args.dataset, args.warmup, args.events)
    run_dir = Path(tempfile.mkdtemp(prefix="freshrec-live-quality-"))
    with processes.embedded_pipeline(run_dir, redis_prefix=f"lq{uuid.uuid4().hex[:8]}") as live:
        result = measure(
            live.settings,
            live.api_url,
            events,
            scored,
            dataset=args.dataset,
            seed=args.seed,
            lists_settle_s=args.lists_settle_s,
        )
    result["dataset"] = args.dataset
    print_report(
        result,
        f"# {args.dataset}: {result['warmup_events']:,} events replayed unscored, then "
        f"{result['events_replayed'] - result['warmup_events']:,} test-then-train "
        f"({result['live']['scored_events']:,} scored); worker and API logs in {run_dir}",
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
