"""Merchandising measured: the exploration of new items in a replay, and the CPU of the rules.

``replay`` (real data): the Taobao log in time order through the real stack (Tansu, the
worker process, Redis) and the in-process recommender. The first ``--split`` share of the log
trains the model; every item whose first event comes later is held back: at the split it
enters the catalogue (category from its first event) as a new item without events, and it
leaves the new items with its first event, as in a shop. Then, per ``--chunk-s`` of event
time, every user active in the chunk asks for ``--k`` recommendations *before* the chunk is
applied; a shown item is clicked if the user interacts with it later in the log. Reported:
the share of shown positions that went to new items, their CTR next to the organic picks'
CTR in the same run, and a reference drawn in the same run: as many new items picked at
random from the still-new ones (no category matching).

``cpu`` (synthetic, in process): CPU per call of the native ranker on 100,000 items x 64
factors with its HNSW graph, without merchandising and with rules (boosts, buries, pins),
1,000 new items and price ranges, and of similar items; and the compile of the rules.

    python benchmarks/bench_merchandising.py [--sections replay,cpu] [--limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from freshrec import processes  # noqa: E402
from freshrec.datasets import load_taobao  # noqa: E402
from freshrec.replay import iter_events, send_to_kafka  # noqa: E402
from operators import Merchandising, Ranker  # noqa: E402
from serving.candidates import build_graph  # noqa: E402
from serving.item_index import ItemIndex  # noqa: E402
from serving.recommender import Filters, Recommender  # noqa: E402
from state.records import CatalogueItem  # noqa: E402
from state.store import RedisStore  # noqa: E402

SEED = 14


# --- replay -------------------------------------------------------------------------------
def replay(
    limit: int | None, split: float, chunk_s: float, k: int, share: float, protocol: str
) -> dict:
    """Held-back items, by ``protocol``:

    - ``first-seen``: every item whose first event comes after the split, in the catalogue
      from the split on, graduating with its first event (as in a shop) — but the pool holds
      only items someone will interact with, which flatters any CTR measured on it;
    - ``sample``: a seeded 10% of all items, in the catalogue from the start, their events
      withheld from the model for the whole replay (they never graduate) — a pool like the
      catalogue, most of whose items nobody will touch again. An impression of an item the
      user already interacted with (in the full log) before the request is not counted.
    """
    frame = load_taobao(limit=limit)
    events = list(iter_events(frame, id_prefix="taobao-"))
    n_warm = int(len(events) * split)
    rng = np.random.default_rng(SEED)
    category: dict[str, str] = {}
    for e in events:
        if e.category_id is not None:
            category.setdefault(e.item_id, e.category_id)
    if protocol == "first-seen":
        seen_before = {e.item_id for e in events[:n_warm]}
        held = {e.item_id for e in events[n_warm:]} - seen_before
        streamed = events
    else:
        items = sorted({e.item_id for e in events})
        held = {items[int(j)] for j in rng.choice(len(items), len(items) // 10, replace=False)}
        streamed = [e for e in events if e.item_id not in held]
    split_ts = events[n_warm].ts.timestamp()
    warm = [e for e in streamed if e.ts.timestamp() < split_ts]
    test = [e for e in events if e.ts.timestamp() >= split_ts]
    # Every interaction of each user with each item, in time: a shown item is clicked if one
    # comes after the request (and, for ``sample``, was not preceded by one).
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        times[(e.user_id, e.item_id)].append(e.ts.timestamp())

    def outcome(user: str, item: str, at: float) -> bool | None:
        """Clicked (a later interaction), or None when the impression does not count."""
        ts = times.get((user, item), ())
        if protocol == "sample" and any(t < at for t in ts):
            return None
        return any(t >= at for t in ts)

    run_dir = Path(tempfile.mkdtemp(prefix="freshrec-bench-merch-"))
    with processes.embedded_pipeline(run_dir, api=False, new_item_share=share) as pipeline:
        settings = pipeline.settings
        store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
        applied: dict[str, int] = defaultdict(int)
        t0 = time.perf_counter()
        _send_and_wait(warm, settings, store, applied)
        warm_s = time.perf_counter() - t0
        # One write, in id order: which of them is "newest" is arbitrary but reproducible.
        store.put_catalogue(
            [CatalogueItem(item_id=i, category_id=category.get(i), title=i) for i in sorted(held)]
        )
        index = ItemIndex(store, 0.1)
        recommender = Recommender(store, index, new_item_share=share)
        shown: dict[str, dict[tuple[str, str], bool]] = {
            "new": {},
            "organic": {},
            "random": {},
        }

        def record(kind: str, user: str, item: str, at: float) -> bool:
            clicked = outcome(user, item, at)
            if clicked is not None:
                pairs = shown[kind]
                pairs[(user, item)] = pairs.get((user, item), False) or clicked
            return clicked is not None

        positions = new_positions = personal = requests = 0
        distinct_new: set[str] = set()
        chunks = _chunks(test, chunk_s)
        t0 = time.perf_counter()
        for start, chunk in chunks:
            index.refresh()
            index.refresh_lists()
            index.refresh_rules()
            still_new = sorted(index.current.new_items.item_ids)
            for user in dict.fromkeys(e.user_id for e in chunk):
                answer = recommender.recommend(user, k, Filters())
                requests += 1
                n_new = 0
                for it in answer.items:
                    is_new = it.reason.startswith("new in ")
                    if record("new" if is_new else "organic", user, it.item_id, start):
                        positions += 1
                        n_new += is_new
                    distinct_new.update([it.item_id] if is_new else [])
                new_positions += n_new
                personal += answer.model_version > 0
                # The reference: as many new items at random from the still-new ones.
                if n_new and still_new:
                    for j in rng.choice(len(still_new), min(n_new, len(still_new)), False):
                        record("random", user, still_new[int(j)], start)
            _send_and_wait(
                [e for e in chunk if e.item_id not in held or protocol == "first-seen"],
                settings,
                store,
                applied,
            )
        test_s = time.perf_counter() - t0
        store.delete_namespace()

    def ctr(pairs: dict[tuple[str, str], bool]) -> dict[str, float]:
        clicks = sum(pairs.values())
        return {
            "pairs": len(pairs),
            "clicks": clicks,
            "ctr": round(clicks / len(pairs), 5) if pairs else 0.0,
        }

    return {
        "protocol": protocol,
        "events": len(events),
        "warm_events": len(warm),
        "test_events": len(test),
        "split_at": events[n_warm].ts.isoformat(),
        "held_back_items": len(held),
        "chunks": len(chunks),
        "requests": requests,
        "personal_answers": personal,
        "k": k,
        "new_item_share_setting": share,
        "positions_counted": positions,
        "new_item_positions": new_positions,
        "new_item_share_shown": round(new_positions / max(1, positions), 4),
        "distinct_new_items_shown": len(distinct_new),
        "new_items": ctr(shown["new"]),
        "organic": ctr(shown["organic"]),
        "random_new_reference": ctr(shown["random"]),
        "warm_up_s": round(warm_s, 1),
        "test_s": round(test_s, 1),
    }


def _chunks(events: list, chunk_s: float) -> list[tuple[float, list]]:
    out: list[tuple[float, list]] = []
    for e in events:
        ts = e.ts.timestamp()
        start = ts - ts % chunk_s
        if not out or out[-1][0] != start:
            out.append((start, []))
        out[-1][1].append(e)
    return out


def _send_and_wait(events: list, settings: Any, store: RedisStore, applied: dict) -> None:
    """Produce ``events`` and wait until the worker applied every one of them."""
    send_to_kafka(events, settings, progress=False)
    for e in events:
        applied[e.user_id] += 1
    users = list(dict.fromkeys(e.user_id for e in events))
    deadline = time.monotonic() + 120
    while users:
        record = store.get_user(users[-1])
        if record is not None and record.events >= applied[users[-1]]:
            users.pop()
            continue
        assert time.monotonic() < deadline, f"worker did not apply the events of {users[-1]}"
        time.sleep(0.01)


# --- cpu ----------------------------------------------------------------------------------
def cpu(n_items: int, factors: int, calls: int) -> dict:
    rng = np.random.default_rng(SEED)
    centers = rng.normal(size=(256, factors))
    cluster = rng.integers(0, 256, n_items)
    matrix = (centers[cluster] + rng.normal(size=(n_items, factors))).astype(np.float32)
    matrix *= 0.1
    codes = (cluster % 50).astype(np.int32)
    brands = (cluster % 20).astype(np.int32)
    unavailable = rng.random(n_items) < 0.05
    prices = np.round(rng.lognormal(3, 1, n_items), 2)
    norms = np.linalg.norm(matrix, axis=1).astype(np.float32)
    popular = [int(r) for r in rng.choice(n_items, 1000, replace=False)]
    t0 = time.perf_counter()
    graph = build_graph(matrix)
    graph_s = time.perf_counter() - t0
    ranker = Ranker(matrix, n_items, codes, unavailable, norms, popular, popular[:100], prices)
    n_new = 1000
    weights = (
        [("item", int(r), 2.0, -np.inf, np.inf) for r in rng.choice(n_items, 100, replace=False)]
        + [("category", c, 1.5, -np.inf, np.inf) for c in range(3)]
        + [("category", c, 0.5, -np.inf, np.inf) for c in range(3, 6)]
        + [("brand", 7, 0.3, -np.inf, np.inf)]
    )
    pins = [(int(r), p, -np.inf, np.inf) for p, r in enumerate(rng.choice(n_items, 5), 1)]

    def compile_merch(weights: list = weights) -> Merchandising:
        return Merchandising(
            n_items, codes, brands, (np.arange(n_new) % 50).astype(np.int32),
            np.full(n_new, -1, np.int32), np.full(n_new, np.nan), np.zeros(n_new, np.bool_),
            weights, pins, time.time(),
        )  # fmt: skip

    merch = compile_merch()
    item_rules = compile_merch([w for w in weights if w[0] == "item"])
    users = [
        (0.1 * (centers[c] + rng.normal(size=factors))).astype(np.float32)
        for c in rng.integers(0, 256, calls)
    ]

    def rank(user: np.ndarray, **kw: Any) -> None:
        ranker.rank(
            user.tobytes(), 0.9, 10, nearest=partial(_nearest, graph, user), covisits=[],
            excluded_rows=[int(r) for r in rng.choice(n_items, 20)], available_only=True,
            wanted_categories=None, unwanted_categories=[], max_per_category=0,
            recent_rows=[], recent_categories=[int(c) for c in rng.integers(0, 50, 5)], **kw,
        )  # fmt: skip

    def clock(calls_: list) -> float:
        for call in calls_[:50]:  # warm-up
            call()
        started = time.thread_time()
        for call in calls_:
            call()
        return round((time.thread_time() - started) / len(calls_) * 1e6, 1)

    row = [int(r) for r in rng.integers(0, n_items, calls)]
    result: dict[str, Any] = {
        "items": n_items,
        "factors": factors,
        "graph_build_s": round(graph_s, 1),
    }
    scenarios = {
        "rank_plain": {},
        "rank_item_rules_pins_new_items": {"merchandising": item_rules, "new_item_slots": 2},
        "rank_rules_new_items": {"merchandising": merch, "new_item_slots": 2},
        "rank_rules_price_range": {
            "merchandising": merch, "new_item_slots": 2, "min_price": 10.0, "max_price": 40.0,
        },
        "rank_selective_price": {"merchandising": merch, "min_price": 500.0},
    }  # fmt: skip
    for name, kw in scenarios.items():
        before = ranker.graph_misses
        n = calls if name != "rank_selective_price" else calls // 4
        result[f"{name}_us"] = clock([partial(rank, u, **kw) for u in users[:n]])
        result[f"{name}_brute_force_share"] = round((ranker.graph_misses - before) / (n + 50), 3)
    result["similar_cosine_only_us"] = clock(
        [partial(ranker.similar, r, 11) for r in row[: calls // 4]]
    )
    result["similar_items_plain_us"] = clock(
        [partial(_similar, ranker, r, None) for r in row[: calls // 4]]
    )
    result["similar_items_rules_us"] = clock(
        [partial(_similar, ranker, r, merch) for r in row[: calls // 4]]
    )
    result["compile_rules_us"] = clock([compile_merch] * 20)
    result["boosted_rows"] = len(merch.boosted_rows)
    return result


def _nearest(graph: Any, user: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    n = min(n, graph.get_current_count())
    labels, distances = graph.knn_query(user, k=n)
    return labels[0].astype(np.intp), float(1.0 - distances[0].max())


def _similar(ranker: Ranker, row: int, merch: Merchandising | None) -> None:
    ranker.similar_items(
        row, 10, covisits=None, available_only=True, wanted_categories=None,
        unwanted_categories=[], merchandising=merch,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sections", default="replay,cpu")
    parser.add_argument("--limit", type=int, help="first N events of the Taobao log")
    parser.add_argument("--split", type=float, default=0.5)
    parser.add_argument("--chunk-s", type=float, default=3600.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument(
        "--protocols", default="first-seen,sample", help="held-back items: first-seen, sample"
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    sections = args.sections.split(",")
    for protocol in args.protocols.split(",") if "replay" in sections else []:
        r = replay(args.limit, args.split, args.chunk_s, args.k, args.share, protocol)
        report[f"replay_{protocol}"] = r
        print(json.dumps(r, indent=2), flush=True)
        print(
            f"\n{protocol}: new items {r['new_item_share_shown']:.1%} of "
            f"{r['positions_counted']:,} positions shown "
            f"({r['requests']:,} requests); CTR new {r['new_items']['ctr']:.2%} "
            f"({r['new_items']['clicks']}/{r['new_items']['pairs']}), organic "
            f"{r['organic']['ctr']:.2%} ({r['organic']['clicks']}/{r['organic']['pairs']}), "
            f"random new items (reference) {r['random_new_reference']['ctr']:.2%} "
            f"({r['random_new_reference']['clicks']}/{r['random_new_reference']['pairs']})",
            flush=True,
        )
    if "cpu" in sections:
        report["cpu"] = c = cpu(args.items, args.factors, args.calls)
        print(json.dumps(c, indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
