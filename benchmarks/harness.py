"""Run the benchmarks, collect their JSON and write a Markdown report with PNG plots.

    python benchmarks/harness.py all [--quick] [--out benchmarks/out/report]
    python benchmarks/harness.py freshness|pipeline|serving|quality|sessions|live_quality|
        responsiveness|drift|erasure|merchandising [--quick]

(``freshrec bench …`` runs this.) Every benchmark measures its references in the same run —
a pass-through flow, a keyed counter, a hello-world endpoint, raw Kafka produce, the user
record read, baselines of the same data — because this machine is shared and noisy; the
report shows each figure next to its reference and their ratio. ``--quick`` shrinks every
benchmark so that ``all`` takes a few minutes; the full sizes are the defaults of each script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Bench:
    """One benchmark script and its arguments (full and quick)."""

    script: str
    full: list[str]
    quick: list[str]
    json_flag: str = "--json"
    extra: list[list[str]] = field(default_factory=list)
    """Further runs of the same script (e.g. a second dataset), each with its own JSON."""


BENCHES: dict[str, Bench] = {
    "freshness": Bench("bench_freshness.py", [], ["--events", "5000", "--clicks", "100"]),
    "pipeline": Bench(
        "bench_pipeline.py",
        [],
        [
            "--rounds",
            "1",
            "--repeats",
            "2",
            "--sections",
            "throughput,floors,profile,memory",
            "--users",
            "10000",
            "--ttl-users",
            "0",
            "--budget-s",
            "120",
        ],  # fmt: skip
    ),
    "serving": Bench(
        "bench_serving.py", [], ["--seconds", "5", "--wrk-seconds", "5", "--recall-users", "200"]
    ),
    "quality": Bench(
        "quality.py",
        ["--dataset", "movielens-100k", "--protocol", "published"],
        ["--dataset", "movielens-100k", "--protocol", "published", "--epochs", "3"],
        extra=[["--dataset", "taobao", "--protocol", "stream"]],
    ),
    "drift": Bench("drift.py", [], ["--limit", "40000"]),
    "sessions": Bench(
        "quality.py",
        ["--dataset", "diginetica", "--protocol", "sessions"],
        ["--dataset", "diginetica", "--protocol", "sessions"],
    ),
    "live_quality": Bench("live_quality.py", [], ["--warmup", "2000", "--events", "200"]),
    "responsiveness": Bench("bench_responsiveness.py", [], ["--users", "30", "--warmup", "3000"]),
    "erasure": Bench("bench_erasure.py", [], ["--events", "5000", "--users", "30"]),
    "merchandising": Bench(
        "bench_merchandising.py", [], ["--limit", "20000", "--items", "20000", "--calls", "500"]
    ),
}


def run_bench(name: str, quick: bool, out: Path) -> tuple[list[Any], float, int]:
    """Run one benchmark (and its extra runs); return their JSON documents, seconds, exit."""
    bench = BENCHES[name]
    runs = [bench.quick if quick else bench.full]
    runs += [r + (["--limit", "30000"] if quick and name == "quality" else []) for r in bench.extra]
    docs: list[Any] = []
    started = time.monotonic()
    code = 0
    for n, args in enumerate(runs):
        json_path = out / f"{name}{'' if n == 0 else n}.json"
        log_path = out / f"{name}{'' if n == 0 else n}.log"
        cmd = [sys.executable, str(HERE / bench.script), *args, bench.json_flag, str(json_path)]
        print(f"→ {name}: {' '.join(cmd[1:])}", flush=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with log_path.open("w") as log:
            result = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        code = code or result.returncode
        tail = log_path.read_text().strip().splitlines()[-12:]
        print("\n".join("   " + line for line in tail), flush=True)
        if json_path.exists():
            docs.append(json.loads(json_path.read_text()))
    return docs, time.monotonic() - started, code


# --- report sections ---------------------------------------------------------------------


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def freshness_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    doc = docs[0]
    rows = [
        [
            "ingest through the API (events/s)",
            _fmt(doc["ingest_api_events_per_s"], 0),
            "raw Kafka produce " + _fmt(doc["kafka_produce_events_per_s"], 0),
            _fmt(doc["ingest_over_raw_produce"], 2),
        ],
    ]
    c = doc["click_to_changed_recommendations"]
    rows.append(
        [
            "click → changed recommendations p50 / p99 (ms)",
            f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f}",
            "goal p99 < 100",
            "–",
        ]
    )
    a = doc["post_ack"]
    rows.append(
        [
            "POST /v1/events acknowledged p50 / p99 (ms)",
            f"{a['p50_ms']:.1f} / {a['p99_ms']:.1f}",
            "–",
            "–",
        ]
    )
    plots = []
    lat = doc.get("click_latencies_ms") or []
    if lat:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(lat, bins=40, color="#3565e0")
        ax.axvline(np.percentile(lat, 99), color="#e0731f", label="p99")
        ax.set_xlabel("click → changed recommendations (ms)")
        ax.set_ylabel("clicks")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "freshness_latency.png", dpi=110)
        plt.close(fig)
        plots.append("freshness_latency.png")
    samples = doc.get("worker_samples") or []
    if len(samples) > 2:
        t = np.array([s["id_ms"] for s in samples]) / 1000.0
        applied = np.array([s.get("applied", 0.0) for s in samples])
        rate = np.diff(applied) / np.maximum(np.diff(t), 1e-3)
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(t[1:] - t[0], rate, color="#3565e0")
        ax.set_xlabel("seconds")
        ax.set_ylabel("events applied / s")
        ax.set_title("dataflow throughput over time (replay, then clicks)")
        fig.tight_layout()
        fig.savefig(out / "throughput_over_time.png", dpi=110)
        plt.close(fig)
        plots.append("throughput_over_time.png")
    return rows, plots


def pipeline_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    doc = docs[0]
    rows = []
    med = _get(doc, "throughput", "events_per_s_median") or {}
    if med:
        full, counter, passthrough = (
            med.get("full"),
            med.get("keyed_counter"),
            med.get("passthrough"),
        )
        rows.append(
            [
                "full flow (events/s, TestingSource, real Redis)",
                _fmt(full, 0),
                f"keyed counter {_fmt(counter, 0)}",
                _fmt(full / counter if full and counter else None, 4),
            ]
        )
        skeleton = med.get("skeleton")
        rows.append(
            [
                "full flow vs skeleton (the keyed shape, no work)",
                _fmt(full, 0),
                f"skeleton {_fmt(skeleton, 0)}",
                _fmt(full / skeleton if full and skeleton else None, 4),
            ]
        )
        rows.append(
            [
                "full flow vs pass-through",
                _fmt(full, 0),
                f"pass-through {_fmt(passthrough, 0)}",
                _fmt(full / passthrough if full and passthrough else None, 5),
            ]
        )
    floors = _get(doc, "floors") or {}
    if floors:
        total, counter = floors.get("sum_us_per_event"), floors.get("keyed_counter_us_per_event")
        rows.append(
            [
                "floors: native µs per event, sum of the stages",
                _fmt(total, 2),
                f"keyed counter whole {_fmt(counter, 2)} µs",
                _fmt(total / counter if total and counter else None, 2),
            ]
        )
    broker = _get(doc, "broker", "events_per_s") or {}
    if broker:
        one, two = broker.get("one_process"), broker.get("two_processes")
        rows.append(
            [
                "from the broker: events/s, two processes",
                _fmt(two, 0),
                f"one process {_fmt(one, 0)}",
                _fmt(two / one if one and two else None, 3),
            ]
        )
    for run in _get(doc, "memory") or []:
        if run.get("user_idle_ttl_s", 0) >= 1e9 and "bytes_per_resident_user" in run:
            rows.append(
                [
                    f"worker RSS per resident user, {run['users']:,} users",
                    _fmt(run["bytes_per_resident_user"], 0),
                    "same run",
                    "–",
                ]
            )
    for name, sizes in (_get(doc, "snapshot_bytes_per_user") or {}).items():
        rows.append([f"snapshot bytes per user ({name})", _fmt(sizes.get("mean"), 0), "", "–"])
    return rows[:20], []


def serving_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    doc = docs[0]
    rows = []
    endpoints = {n: doc[n] for n in ("hello", "user-record", "recommendations") if n in doc}
    names, p50, p99 = [], [], []
    if isinstance(endpoints, dict):
        for name, r in endpoints.items():
            if not isinstance(r, dict):
                continue
            rows.append(
                [
                    f"{name}: p50 / p99 / p99.9 ms at fixed rate; max req/s",
                    f"{_fmt(r.get('p50_ms'), 2)} / {_fmt(r.get('p99_ms'), 2)} / "
                    f"{_fmt(r.get('p99_9_ms'), 2)}; {_fmt(r.get('max_req_s'), 0)}",
                    "hello / user-record in the same run",
                    "–",
                ]
            )
            names.append(name)
            p50.append(r.get("p50_ms") or 0.0)
            p99.append(r.get("p99_ms") or 0.0)
    for key, value in sorted(_flatten(doc).items()):
        if (
            ("ratio" in key or "recall" in key)
            and isinstance(value, int | float)
            and not any(key.startswith(n) for n in endpoints)
        ):
            rows.append([key, _fmt(float(value), 3), "same run", "–"])
    plots = []
    if names:
        fig, ax = plt.subplots(figsize=(6, 3))
        x = np.arange(len(names))
        ax.bar(x - 0.2, p50, 0.4, label="p50", color="#3565e0")
        ax.bar(x + 0.2, p99, 0.4, label="p99", color="#e0731f")
        ax.set_xticks(x, names)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "serving_latency.png", dpi=110)
        plt.close(fig)
        plots.append("serving_latency.png")
    return rows, plots


def quality_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    rows = []
    plots = []
    for doc in docs:
        if not isinstance(doc, list) or not doc:
            continue
        dataset = doc[0].get("dataset", "?")
        best_base = max(
            (r for r in doc if "ours" not in r["model"]), key=lambda r: r.get("recall@10", 0)
        )
        for r in doc:
            if "ours" in r["model"]:
                ratio = r["recall@10"] / best_base["recall@10"] if best_base["recall@10"] else None
                rows.append(
                    [
                        f"{dataset}: {r['model']} recall@10",
                        _fmt(r["recall@10"], 4),
                        f"best baseline {best_base['model']} {best_base['recall@10']:.4f}",
                        _fmt(ratio, 2),
                    ]
                )
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.barh([r["model"] for r in doc], [r["recall@10"] for r in doc], color="#3565e0")
        ax.set_xlabel("recall@10")
        ax.set_title(f"{dataset} ({doc[0].get('protocol', '')})")
        fig.tight_layout()
        name = f"quality_{dataset}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        plots.append(name)
    return rows, plots


def drift_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    rows = []
    doc = docs[0]
    for key, value in sorted(_flatten(doc).items()):
        if isinstance(value, int | float) and any(
            w in key for w in ("hr", "delay", "detected", "false")
        ):
            rows.append([key, _fmt(float(value), 4), "same run", "–"])
    png = HERE / "out" / "drift.png"
    plots = []
    if png.exists():
        (out / "drift.png").write_bytes(png.read_bytes())
        plots.append("drift.png")
    return rows[:20], plots


def erasure_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    doc = docs[0]
    ref = doc["reference_event_to_record"]
    ref_text = f"event → record {_fmt(ref['p50_ms'])} / {_fmt(ref['p99_ms'])} ms"
    rows = []
    for name in ("delete_answer", "gone_from_redis", "applied_by_worker", "gone_everywhere"):
        p = doc[name]
        ratio = _fmt(p["p50_ms"] / ref["p50_ms"], 2)
        rows.append(
            [
                f"{name} p50 / p99 (ms)",
                f"{_fmt(p['p50_ms'])} / {_fmt(p['p99_ms'])}",
                ref_text,
                ratio,
            ]
        )
    script = doc["erase_script_full_streams"]
    rows.append(["erase script, full streams (ms, p50)", _fmt(script["p50_ms"], 2), "–", "–"])
    return rows, []


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(doc, list) and len(doc) <= 12:
        for n, v in enumerate(doc):
            flat.update(_flatten(v, f"{prefix}{n}."))
    else:
        flat[prefix.rstrip(".")] = doc
    return flat


def sessions_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    rows = []
    for r in docs[0]:
        (hr_lo, hr_hi), (mrr_lo, mrr_hi) = r["HR@20_ci95"], r["MRR@20_ci95"]
        rows.append(
            [
                f"diginetica sample, next view: {r['model']} HR@20 / MRR@20",
                f"{r['HR@20']:.3f} [{hr_lo:.3f}, {hr_hi:.3f}] / {r['MRR@20']:.3f} "
                f"[{mrr_lo:.3f}, {mrr_hi:.3f}]",
                "full dataset (session-rec): V-SKNN 0.520 / 0.184, GRU4Rec 0.510 / 0.175",
                "–",
            ]
        )
    return rows, []


def live_quality_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    doc = docs[0]
    live, offline, diff = doc["live"], doc["offline"], doc["difference"]
    lo, hi = diff["HR@10_ci95"]
    return [
        [
            f"HR@10 served live (API ← worker ← Kafka), {live['scored_events']:,} events",
            f"{live['HR@10']:.4f}",
            f"offline harness, same events {offline['HR@10']:.4f}",
            f"{live['HR@10'] / offline['HR@10']:.2f}" if offline["HR@10"] else "–",
        ],
        [
            "live − offline HR@10, paired bootstrap 95% CI",
            f"{diff['HR@10']:+.4f} [{lo:+.4f}, {hi:+.4f}]",
            "agree within noise" if diff["agree_within_noise"] else "DISAGREE",
            "–",
        ],
    ], []


def responsiveness_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    doc = docs[0]
    return [
        [
            f"new users whose cart changed the next answer's items ({doc['trials']} trials)",
            f"{doc['items_changed_share']:.1%}",
            f"items or explanations {doc['items_or_explanations_changed_share']:.1%} (goal 100%)",
            "–",
        ]
    ], []


def merchandising_section(docs: list[Any], out: Path) -> tuple[list[list[str]], list[str]]:
    doc = docs[0]
    rows = []
    for key, r in doc.items():
        if key.startswith("replay_"):
            new, organic, rand = r["new_items"], r["organic"], r["random_new_reference"]
            rows.append(
                [
                    f"{key}: share of positions to new items; their CTR",
                    f"{r['new_item_share_shown']:.1%}; {new['ctr']:.2%} of {new['pairs']:,}",
                    f"organic CTR {organic['ctr']:.2%}; random new items {rand['ctr']:.2%}",
                    _fmt(new["ctr"] / rand["ctr"], 1) + "x random" if rand["ctr"] else "–",
                ]
            )
    cpu = doc.get("cpu")
    if cpu:
        plain = cpu["rank_plain_us"]
        for key in (
            "rank_item_rules_pins_new_items_us",
            "rank_rules_new_items_us",
            "rank_rules_price_range_us",
            "similar_items_rules_us",
        ):
            rows.append([f"cpu: {key}", _fmt(cpu[key]), f"rank without rules {plain} µs",
                         _fmt(cpu[key] / plain, 2)])  # fmt: skip
    return rows, []


SECTIONS: dict[str, Callable[[list[Any], Path], tuple[list[list[str]], list[str]]]] = {
    "freshness": freshness_section,
    "pipeline": pipeline_section,
    "serving": serving_section,
    "quality": quality_section,
    "drift": drift_section,
    "sessions": sessions_section,
    "live_quality": live_quality_section,
    "responsiveness": responsiveness_section,
    "erasure": erasure_section,
    "merchandising": merchandising_section,
}


def write_report(results: dict[str, tuple[list[Any], float, int]], out: Path, quick: bool) -> Path:
    lines = [
        f"# freshrec benchmark report ({'quick' if quick else 'full'})",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')} · {os.cpu_count()} cores · every figure next "
        "to a reference measured in the same run.",
        "",
        "| benchmark | figure | value | reference | ratio |",
        "|---|---|---|---|---|",
    ]
    plots_all: list[str] = []
    for name, (docs, seconds, code) in results.items():
        if not docs:
            lines.append(f"| {name} | failed (exit {code}, see {name}.log) | | | |")
            continue
        try:
            rows, plots = SECTIONS[name](docs, out)
        except Exception as exc:  # a changed JSON layout: say so, keep the rest of the report
            rows, plots = [[f"(could not read: {exc})", "", "", ""]], []
        for figure, value, reference, ratio in rows:
            lines.append(f"| {name} | {figure} | {value} | {reference} | {ratio} |")
        lines.append(f"| {name} | wall time (s) | {seconds:.0f} | | |")
        plots_all += plots
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots_all]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(
        json.dumps(
            {k: {"docs": v[0], "seconds": v[1], "exit": v[2]} for k, v in results.items()},
            default=str,
        )
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("which", choices=["all", *BENCHES])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "report")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(BENCHES) if args.which == "all" else [args.which]
    results = {name: run_bench(name, args.quick, args.out) for name in names}
    report = write_report(results, args.out, args.quick)
    print(f"\nreport: {report}")
    print(report.read_text())
    return max(code for _, _, code in results.values())


if __name__ == "__main__":
    sys.exit(main())
