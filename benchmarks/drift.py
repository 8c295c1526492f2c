"""Shift scenario on the Taobao log: detection delay and HR@10 recovery, with vs without recalibration.

Replays the normalised Taobao log (``freshrec.datasets.load_taobao``) prequentially — every
event is first a test (rank, hit or miss), then a training step — through the same native ISGD
steps the live flow runs (``user_step``/``item_step``, ``operators/src/isgd.rs``). At time T
(the median timestamp) a preference shift is injected for a share of the users with enough
history, and three variants run on the very same stream:

    (a) plain ISGD;
    (b) ISGD + per-user Page-Hinkley recalibration (native, ``operators/src/recalibration.rs``);
    (c) (b) + a short-memory ISGD model, combined per user with Hedge (``operators/ensemble.py``).

**HR@10** ranks *every item seen before the event* (no sampling) by the model's score for the
user and counts a hit if the true item is in the top 10 (ties counted against it; seen items
are not excluded, because Taobao users re-view items). Items not seen before cannot be hit.

**The shift.** Eligible users have >= ``--min-history`` events before T and after T;
``--share`` of them (seeded) are shifted. For a shifted user every category ``c`` met after T
gets its own target category ``π_u(c)``: a random category, drawn with the seed, among those
with >= 20 distinct items that the user never touched in the whole log. Each post-T item
``i`` of category ``c`` is replaced by the item of ``π_u(c)`` at the same popularity quantile
(items ranked within their category by total event count in the log, then by id): similar
popularity, another category, and a repeated item stays a repeated item. Event types and times
are kept. The shifted users' tastes thus swap to categories they never showed, from T on.

**Detection** counts, per shifted user, the user's events from T to the first alarm (delay 0 =
alarm on the first shifted event); alarms on unshifted users (and on shifted users before T)
are false alarms, reported per 100k of those events. They are real-data alarms, so some follow
natural changes of taste rather than noise.

    .venv/bin/python benchmarks/drift.py [--share 0.2] [--seed 7] [--json out.json]
"""

# ruff: noqa: E402
from __future__ import annotations

import os

# Single-threaded BLAS: a 32-wide matvec per event gains nothing from threads, only noise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from freshrec.datasets import load_taobao
from operators import (
    DEFAULT_EVENT_WEIGHTS,
    CategoryProfile,
    GlobalRecalibration,
    GlobalRecalibrationConfig,
    IsgdParams,
    UserRecalibration,
    UserRecalibrationConfig,
    initial_vector,
    item_step,
    user_step,
)
from operators.ensemble import Hedge, combine_scores

OUT_DIR = Path(__file__).resolve().parent / "out"
K = 10
LONG = IsgdParams()  # the live defaults: 32 factors, eta 0.05, lambda 0.01
SHORT = IsgdParams(learn_rate=0.2, regularization=0.05)  # short memory: faster steps, more decay
USER_POLICY = UserRecalibrationConfig()
USER_POLICY_FIELDS = (
    "min_instances", "delta", "lambda_factor", "std_alpha", "min_threshold", "alpha",
    "refit_events", "refit_epochs", "shrink", "boost", "boost_events",
)  # fmt: skip
GLOBAL_POLICY = GlobalRecalibrationConfig()
CURVE_BEFORE, CURVE_AFTER = 20, 60


# --- the stream and the shift --------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    users: npt.NDArray[np.int64]  # user index per event
    items: npt.NDArray[np.int64]  # item index per event (after the shift)
    weights: npt.NDArray[np.float64]  # ISGD event weight per event
    categories: list[str]  # category per event (after the shift)
    after_t: npt.NDArray[np.bool_]
    shifted_event: npt.NDArray[np.bool_]  # event of a shifted user at or after T
    shifted_user: npt.NDArray[np.bool_]  # per user
    user_ids: list[str]
    item_ids: list[str]
    t_s: int
    changed: int  # shifted events whose item really changed


def build_stream(frame: pl.DataFrame, share: float, min_history: int, seed: int) -> Stream:
    rng = np.random.default_rng(seed)
    t_s = int(frame["ts"].quantile(0.5, "nearest") or 0)
    frame = frame.with_columns((pl.col("ts") >= t_s).alias("after_t"))
    history = frame.group_by("user_id").agg(
        (~pl.col("after_t")).sum().alias("pre"), pl.col("after_t").sum().alias("post")
    )
    eligible = sorted(
        history.filter((pl.col("pre") >= min_history) & (pl.col("post") >= min_history))[
            "user_id"
        ].to_list()
    )
    chosen = set(rng.choice(eligible, size=round(share * len(eligible)), replace=False).tolist())

    # Items of each category by popularity (event count, then id): the quantile map's ladder.
    counts = (
        frame.group_by("item_id", "category_id")
        .len()
        .sort(["category_id", "len", "item_id"], descending=[False, True, False])
    )
    ladder: dict[str, list[str]] = {}
    for category, item in zip(counts["category_id"], counts["item_id"], strict=True):
        ladder.setdefault(category, []).append(item)
    rank_in_category = {item: r for items in ladder.values() for r, item in enumerate(items)}
    big = sorted(c for c, items in ladder.items() if len(items) >= 20)
    touched: dict[str, set[str]] = {}
    for user, category in zip(frame["user_id"], frame["category_id"], strict=True):
        touched.setdefault(user, set()).add(category)

    targets: dict[tuple[str, str], str] = {}
    new_items: list[str] = []
    new_categories: list[str] = []
    changed = 0
    for user, item, category, after in zip(
        frame["user_id"], frame["item_id"], frame["category_id"], frame["after_t"], strict=True
    ):
        if not (after and user in chosen):
            new_items.append(item)
            new_categories.append(category)
            continue
        key = (user, category)
        if key not in targets:
            options = [c for c in big if c not in touched[user]]
            targets[key] = options[int(rng.integers(len(options)))]
        source, target = ladder[category], ladder[targets[key]]
        quantile = rank_in_category[item] / max(1, len(source) - 1)
        mapped = target[round(quantile * (len(target) - 1))]
        changed += mapped != item
        new_items.append(mapped)
        new_categories.append(targets[key])

    user_ids = sorted(set(frame["user_id"].to_list()))
    user_index = {u: n for n, u in enumerate(user_ids)}
    item_index: dict[str, int] = {}
    for item in new_items:  # rows in order of first appearance = the catalogue seen so far
        item_index.setdefault(item, len(item_index))
    users = np.array([user_index[u] for u in frame["user_id"]], dtype=np.int64)
    shifted_user = np.zeros(len(user_ids), dtype=bool)
    shifted_user[[user_index[u] for u in chosen]] = True
    after_t = frame["after_t"].to_numpy()
    return Stream(
        users=users,
        items=np.array([item_index[i] for i in new_items], dtype=np.int64),
        weights=np.array(
            [DEFAULT_EVENT_WEIGHTS.get(b, 1.0) for b in frame["behavior"]], dtype=np.float64
        ),
        categories=new_categories,
        after_t=after_t,
        shifted_event=after_t & shifted_user[users],
        shifted_user=shifted_user,
        user_ids=user_ids,
        item_ids=list(item_index),
        t_s=t_s,
        changed=changed,
    )


# --- one model -----------------------------------------------------------------------------


class Model:
    """ISGD over a dense item matrix (rows in order of first appearance) for fast ranking."""

    def __init__(self, stream: Stream, params: IsgdParams) -> None:
        self.params = params
        self.item_matrix = np.stack(
            [initial_vector(i, "item", params) for i in stream.item_ids]
        ).astype(np.float32)
        self.user_matrix = np.stack(
            [initial_vector(u, "user", params) for u in stream.user_ids]
        ).astype(np.float32)

    def scores(self, user: int, known: int) -> npt.NDArray[np.float32]:
        scores: npt.NDArray[np.float32] = self.item_matrix[:known] @ self.user_matrix[user]
        return scores

    def learn(self, user: int, item: int, weight: float, user_multiplier: float = 1.0) -> float:
        user_vec, item_vec = self.user_matrix[user], self.item_matrix[item]  # views: updated
        before = user_vec.copy()
        err = user_step(user_vec, item_vec, weight * user_multiplier, self.params)
        item_step(item_vec, before, weight, self.params)
        return err


def is_hit(scores: npt.NDArray[np.float32], item: int, known: int) -> bool:
    return item < known and int(np.count_nonzero(scores > scores[item])) < K


# --- the replay ----------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    hits: npt.NDArray[np.bool_]
    alarm_events: list[int] = field(default_factory=list)  # stream positions of user alarms
    global_alarms: list[int] = field(default_factory=list)
    short_weight: list[float] = field(default_factory=list)  # Hedge weight of short, shifted
    seconds: float = 0.0


def replay(stream: Stream, recalibrate: bool, ensemble: bool, name: str) -> Run:
    start = time.perf_counter()
    n_events, n_users = stream.users.size, len(stream.user_ids)
    long = Model(stream, LONG)
    short = Model(stream, SHORT) if ensemble else None
    policies = [UserRecalibration(USER_POLICY) for _ in range(n_users)] if recalibrate else []
    profiles = [CategoryProfile() for _ in range(n_users)]
    hedges = [Hedge(2, learning_rate=0.5, weight_floor=0.05) for _ in range(n_users)]
    windows: list[deque[tuple[str, float]]] = [
        deque(maxlen=USER_POLICY.refit_events) for _ in range(n_users)
    ]
    global_policy = GlobalRecalibration(GLOBAL_POLICY)
    run = Run(name, np.zeros(n_events, dtype=bool))
    item_ids = stream.item_ids
    item_rows = {item: row for row, item in enumerate(item_ids)}

    def item_vector(item_id: str) -> npt.NDArray[np.float32]:
        vector: npt.NDArray[np.float32] = long.item_matrix[item_rows[item_id]]
        return vector

    known = 0
    for n in range(n_events):
        user, item, weight = int(stream.users[n]), int(stream.items[n]), float(stream.weights[n])
        # test
        long_scores = long.scores(user, known)
        if short is None:
            hit = is_hit(long_scores, item, known)
        else:
            short_scores = short.scores(user, known)
            hedge = hedges[user]
            combined = combine_scores(hedge.weights, [long_scores, short_scores])
            hit = is_hit(combined, item, known)
            hedge.update(
                [
                    1.0 - is_hit(long_scores, item, known),
                    1.0 - is_hit(short_scores, item, known),
                ]
            )
            if stream.shifted_user[user]:
                run.short_weight.append(hedge.weights[1])
        run.hits[n] = hit
        if global_policy.update(float(hit)) is not None:
            run.global_alarms.append(n)
        # train
        policy = policies[user] if recalibrate else None
        multiplier = policy.learning_rate_multiplier if policy is not None else 1.0
        long.learn(user, item, weight, multiplier)
        # The detector's loss: the category surprise of the event (see CategoryProfile).
        loss = profiles[user].observe(stream.categories[n])
        if short is not None:
            short.learn(user, item, weight)
        windows[user].append((item_ids[item], weight))
        if policy is not None and policy.update(loss):
            run.alarm_events.append(n)
            decision = policy.recalibrate(
                long.user_matrix[user],
                list(windows[user]),
                item_vector,
                initial_vector(stream.user_ids[user], "user", LONG),
                LONG,
            )
            long.user_matrix[user] = decision.user_vector
        known = max(known, item + 1)
    run.seconds = time.perf_counter() - start
    return run


# --- measures ------------------------------------------------------------------------------


def user_positions(stream: Stream) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per event: its index in the user's history, and relative to the user's first post-T one."""
    order = np.zeros(stream.users.size, dtype=np.int64)
    first_after = np.full(len(stream.user_ids), -1, dtype=np.int64)
    seen = np.zeros(len(stream.user_ids), dtype=np.int64)
    for n, user in enumerate(stream.users):
        order[n] = seen[user]
        seen[user] += 1
        if stream.after_t[n] and first_after[user] < 0:
            first_after[user] = order[n]
    relative = order - first_after[stream.users]
    return order, relative


def curve(hits: npt.NDArray[np.bool_], relative: npt.NDArray[np.int64], mask: Any) -> list[float]:
    """Mean hit over ``mask`` events at each relative position -CURVE_BEFORE..CURVE_AFTER-1."""
    out = []
    for k in range(-CURVE_BEFORE, CURVE_AFTER):
        selected = hits[mask & (relative == k)]
        out.append(float(selected.mean()) if selected.size else math.nan)
    return out


def moving_average(values: Sequence[float], width: int) -> list[float]:
    out = []
    for n in range(len(values)):
        window = [v for v in values[max(0, n - width + 1) : n + 1] if not math.isnan(v)]
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def summarise(stream: Stream, run: Run, relative: npt.NDArray[np.int64]) -> dict[str, Any]:
    hits = run.hits
    shifted_user_event = stream.shifted_user[stream.users]
    before = shifted_user_event & ~stream.after_t
    rate = lambda mask: float(hits[mask].mean())  # noqa: E731
    result: dict[str, Any] = {
        "variant": run.name,
        "seconds": round(run.seconds, 1),
        "hr10_all": rate(np.ones_like(hits)),
        "hr10_shifted_before_t": rate(before),
        "hr10_shifted_after_t": rate(stream.shifted_event),
        "hr10_shifted_first_20": rate(stream.shifted_event & (relative < 20)),
        "hr10_shifted_20_to_60": rate(stream.shifted_event & (relative >= 20) & (relative < 60)),
        "hr10_unshifted_after_t": rate(~shifted_user_event & stream.after_t),
        "global_alarm_events": run.global_alarms,
    }
    if run.short_weight:
        result["mean_short_weight_shifted_users"] = float(np.mean(run.short_weight))
    if run.alarm_events or run.name != "plain ISGD":
        alarms = np.array(run.alarm_events, dtype=np.int64)
        users = stream.users[alarms] if alarms.size else alarms
        on_shift = stream.shifted_event[alarms] if alarms.size else alarms.astype(bool)
        false_mask = ~on_shift
        non_shift_events = int((~stream.shifted_event).sum())
        delays: dict[int, int] = {}
        for pos, user in zip(alarms[on_shift], users[on_shift], strict=True):
            delays.setdefault(int(user), int(relative[pos]))
        n_shifted = int(stream.shifted_user.sum())
        values = sorted(delays.values())
        result.update(
            {
                "user_alarms": int(alarms.size),
                "shifted_users_detected": len(delays),
                "shifted_users": n_shifted,
                "detected_share": len(delays) / n_shifted,
                "delay_events_median": float(np.median(values)) if values else math.nan,
                "delay_events_mean": float(np.mean(values)) if values else math.nan,
                "delay_events_p90": float(np.percentile(values, 90)) if values else math.nan,
                "delays": values,
                "false_alarms": int(false_mask.sum()),
                "false_alarms_per_100k": float(false_mask.sum()) * 100_000 / non_shift_events,
            }
        )
    return result


def recovery_events(smoothed: Sequence[float], level: float) -> int | None:
    """First post-T position where the smoothed curve is back to ``level``."""
    for k, value in enumerate(smoothed[CURVE_BEFORE:]):
        if value >= level:
            return k
    return None


def plot(stream: Stream, runs: list[Run], summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, relative = user_positions(stream)
    mask = stream.shifted_user[stream.users]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    xs = list(range(-CURVE_BEFORE, CURVE_AFTER))
    for run in runs:
        left.plot(xs, moving_average(curve(run.hits, relative, mask), 5), label=run.name)
    left.axvline(0, color="grey", linestyle=":")
    left.set_xlabel("shifted user's event index relative to T (0 = first shifted event)")
    left.set_ylabel("HR@10, mean over shifted users (moving average of 5)")
    left.set_title(f"Recovery after the shift ({int(stream.shifted_user.sum())} shifted users)")
    left.legend()
    for summary in summaries:
        if "delays" not in summary:
            continue
        delays = summary["delays"]
        n = summary["shifted_users"]
        grid = np.arange(CURVE_AFTER)
        share = [sum(d <= g for d in delays) / n for g in grid]
        right.step(
            grid,
            share,
            where="post",
            label=f"{summary['variant']} ({summary['false_alarms_per_100k']:.0f} false alarms/100k)",
        )
    right.set_xlabel("events after T")
    right.set_ylabel("share of shifted users detected")
    right.set_title("Per-user Page-Hinkley: detection delay")
    right.set_ylim(0, 1)
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--min-history", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=None, help="first N events only")
    parser.add_argument("--png", type=Path, default=OUT_DIR / "drift.png")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    stream = build_stream(load_taobao(limit=args.limit), args.share, args.min_history, args.seed)
    n_shift = int(stream.shifted_event.sum())
    print(
        f"seed {args.seed}: {stream.users.size} events, {len(stream.user_ids)} users, "
        f"{len(stream.item_ids)} items; T = {stream.t_s} (median ts); "
        f"{int(stream.shifted_user.sum())} shifted users, {n_shift} shifted events "
        f"({stream.changed} items changed)"
    )
    print(f"user policy {USER_POLICY}")
    runs = [
        replay(stream, recalibrate=False, ensemble=False, name="plain ISGD"),
        replay(stream, recalibrate=True, ensemble=False, name="ISGD + recalibration"),
        replay(stream, recalibrate=True, ensemble=True, name="recalibration + Hedge(short, long)"),
    ]
    _, relative = user_positions(stream)
    summaries = [summarise(stream, run, relative) for run in runs]
    mask = stream.shifted_user[stream.users]
    pre_level = summaries[0]["hr10_shifted_before_t"]
    for run, summary in zip(runs, summaries, strict=True):
        smoothed = moving_average(curve(run.hits, relative, mask), 5)
        summary["recovery_events_to_pre_t_level"] = recovery_events(smoothed, pre_level)

    columns = [
        ("HR all", "hr10_all", "{:.4f}"),
        ("shift<T", "hr10_shifted_before_t", "{:.4f}"),
        ("shift>=T", "hr10_shifted_after_t", "{:.4f}"),
        ("[0,20)", "hr10_shifted_first_20", "{:.4f}"),
        ("[20,60)", "hr10_shifted_20_to_60", "{:.4f}"),
        ("unshift>=T", "hr10_unshifted_after_t", "{:.4f}"),
        ("recover", "recovery_events_to_pre_t_level", "{}"),
        ("detected", "detected_share", "{:.1%}"),
        ("delay med", "delay_events_median", "{:.0f}"),
        ("delay mean", "delay_events_mean", "{:.1f}"),
        ("FA/100k", "false_alarms_per_100k", "{:.0f}"),
    ]
    print(
        "\nHR@10 (full ranking of items seen so far); shifted users before T, after T, and in "
        "their first 20 / next 40 events after T; unshifted users after T; recover = events "
        "after T until the shifted users' HR (moving average of 5) is back to plain ISGD's "
        "pre-T level; detection: share of shifted users alarmed after T, delay in their events "
        "after T; FA/100k = alarms on unshifted events per 100k of them"
    )
    print(f"{'variant':36s}" + "".join(f"{c:>11s}" for c, _, _ in columns))
    for summary in summaries:
        cells = []
        for _, key, fmt in columns:
            value = summary.get(key)
            cells.append("-" if value is None else fmt.format(value))
        print(f"{summary['variant']:36s}" + "".join(f"{c:>11s}" for c in cells))
    for summary in summaries:
        print(
            f"{summary['variant']}: global HR@10 alarms at events {summary['global_alarm_events']}"
        )
    plot(stream, runs, summaries, args.png)
    print(f"plot: {args.png}")
    if args.json is not None:
        payload = {
            "seed": args.seed,
            "share": args.share,
            "min_history": args.min_history,
            "t_s": stream.t_s,
            "t_event": int(np.argmax(stream.after_t)),
            "user_policy": {name: getattr(USER_POLICY, name) for name in USER_POLICY_FIELDS},
            "summaries": summaries,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
