"""Serving latency and throughput under load, next to reference endpoints on the same server.

Starts its own embedded stack, writes 100,000 items x 64 factors, their co-visitation lists
(20 neighbours each) and 100,000 users through ``RedisStore`` (synthetic: 256 gaussian
clusters in factor space, item norms log-normal, neighbours from the item's cluster, users
drawn around a cluster with 10-30 seen items of it), starts the API under granian with 2
workers (``--workers``) and the bench endpoints, and loads it from SEPARATE processes on
loopback:

- fixed rate (open loop, default 2,000 req/s): this script's own asyncio generator in a child
  process; every request is due at ``start + i / rate`` and its latency counts from then, so
  a stalled server is charged for the requests it delayed (no coordinated omission);
- max req/s: ``wrk`` (closed loop, 1 thread, 32 connections, random users via Lua).

for ``hello`` (framework only), ``user-record`` (one Redis GET), ``floor`` (the one Redis
read of record and lists and the graph query, nothing else: what a personal answer read from
Redis cannot skip) and ``recommendations`` (random users; their records and lists come from
each worker's copies, ``state/replica.py``, which the run waits for and reports the share
of), all in one run; then recall@10 of the served top-10 against brute force over 500 random
users.

    python benchmarks/bench_serving.py [--rate 2000] [--seconds 15] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from freshrec import processes  # noqa: E402
from freshrec.stack import embedded_stack, free_port  # noqa: E402
from serving.item_index import ItemIndex  # noqa: E402
from serving.recommender import Recommender  # noqa: E402
from state.records import NeighboursRecord, UserRecord, vector_from_bytes, vector_to_bytes  # noqa: E402
from state.store import ItemWrite, RedisStore  # noqa: E402

N_ITEMS = N_USERS = 100_000
FACTORS = 64
CLUSTERS = 256
NEIGHBOURS = 20
SEED = 7
ENDPOINTS = {
    "hello": "/v1/bench/hello",
    "user-record": "/v1/bench/user-record/u{user}",
    "floor": "/v1/bench/floor/u{user}",
    "recommendations": "/v1/users/u{user}/recommendations?k=10",
}


# --- load generator (runs in a child process) -----------------------------------------------
async def _request(reader, writer, path: bytes) -> int:  # type: ignore[no-untyped-def]
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    return int(head[9:12])


async def _generate(
    port: int, template: str, rate: float, seconds: float, conns: int, seed: int
) -> dict:
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(seed)
    users = rng.integers(0, N_USERS, 1_000_000)
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    closed_loop = rate <= 0
    deadline = loop.time() + seconds + 0.2

    async def worker(n: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = n
        while True:
            if closed_loop:
                if loop.time() > deadline:
                    break
                item: tuple[float, bytes] | None = (
                    loop.time(),
                    template.format(user=users[i % users.size]).encode(),
                )
                i += conns
            else:
                item = await queue.get()
            if item is None:
                break
            due, path = item
            status = await _request(reader, writer, path)
            if status != 200:
                errors += 1
            latencies.append(loop.time() - due)
        writer.close()

    tasks = [asyncio.create_task(worker(n)) for n in range(conns)]
    started = loop.time() + 0.2
    if not closed_loop:
        total, sent = int(rate * seconds), 0
        while sent < total:
            due_now = min(total, int((loop.time() - started) * rate) + 1)
            while sent < due_now:
                path = template.format(user=users[sent % users.size]).encode()
                queue.put_nowait((started + sent / rate, path))
                sent += 1
            await asyncio.sleep(0.0005)
        for _ in tasks:
            queue.put_nowait(None)
    await asyncio.gather(*tasks)
    elapsed = loop.time() - started
    ms = np.asarray(latencies) * 1000
    return {
        "requests": int(ms.size),
        "errors": errors,
        "achieved_req_s": round(ms.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "p99_9_ms": round(float(np.percentile(ms, 99.9)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def run_generator(
    port: int, template: str, rate: float, seconds: float, conns: int, seed: int = SEED + 1
) -> dict:
    """Fixed-rate (rate > 0) or closed-loop (rate 0) load from a child process.

    ``seed`` draws the users: the warm-up uses other users than the measured runs, so no
    measured request is answered from a result cached by the warm-up.
    """
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--generate",
            str(port),
            template,
            str(rate),
            str(seconds),
            str(conns),
            str(seed),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def load_generator() -> list[str] | None:
    """wrk, or oha (what ``./dev bench`` builds from crates.io where wrk cannot be installed)."""
    if shutil.which("wrk"):
        return ["wrk"]
    oha = shutil.which("oha") or str(
        Path(__file__).resolve().parents[1] / ".freshrec/tools/bin/oha"
    )
    return [oha] if Path(oha).is_file() else None


def run_wrk(port: int, template: str, seconds: int, script_dir: Path) -> dict:
    """Max req/s, closed loop, 32 connections, random users (wrk, else oha)."""
    tool = load_generator()
    assert tool is not None
    if tool[0] != "wrk":
        return run_oha(tool[0], port, template, seconds, script_dir)
    lua = script_dir / "random_user.lua"
    path_fmt = template.replace("{user}", "%d")
    lua.write_text(
        "math.randomseed(7)\n"
        "request = function()\n"
        f'  return wrk.format("GET", string.format("{path_fmt}", math.random(0, {N_USERS - 1})))\n'
        "end\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", str(lua), f"http://127.0.0.1:{port}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"max_req_s": rps, "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def run_oha(oha: str, port: int, template: str, seconds: int, script_dir: Path) -> dict:
    """:func:`run_wrk` with oha: each request takes a URL at random from a file of random users."""
    users = np.random.default_rng(7).integers(0, N_USERS, N_USERS)
    urls = script_dir / "random_users.txt"
    urls.write_text("".join(f"http://127.0.0.1:{port}{template.format(user=u)}\n" for u in users))
    out = subprocess.run(
        [
            oha,
            "-z",
            f"{seconds}s",
            "-c",
            "32",
            "--no-tui",
            "--output-format",
            "json",
            "--urls-from-file",
            str(urls),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(out)
    codes = doc.get("statusCodeDistribution", {})
    non2xx = sum(n for code, n in codes.items() if not 200 <= int(code) < 400)
    return {"max_req_s": float(doc["summary"]["requestsPerSec"]), "non_2xx": non2xx}


# --- data ---------------------------------------------------------------------------------
def write_synthetic(store: RedisStore) -> None:
    rng = np.random.default_rng(SEED)
    centers = rng.normal(size=(CLUSTERS, FACTORS))
    cluster = rng.integers(0, CLUSTERS, N_ITEMS)
    items = centers[cluster] + rng.normal(size=(N_ITEMS, FACTORS))
    items *= 0.1 * rng.lognormal(0, 0.3, (N_ITEMS, 1))
    items = items.astype(np.float32)
    popularity = rng.normal(0, 2, N_ITEMS)
    for start in range(0, N_ITEMS, 2000):
        store.write_items(
            [
                ItemWrite(
                    f"i{n}",
                    1,
                    vector_to_bytes(items[n]),
                    float(popularity[n]),
                    None,
                    f"c{cluster[n] % 50}",
                )
                for n in range(start, min(start + 2000, N_ITEMS))
            ]
        )
    by_cluster = [np.flatnonzero(cluster == c) for c in range(CLUSTERS)]
    # Co-visitation as the dataflow stores it: 20 neighbours per item (from its cluster, so
    # they agree with the factors, as real co-visits mostly do), strongest first. Drawn from
    # their own generator: the items and users stay those of earlier runs.
    covisit_rng = np.random.default_rng(SEED + 100)
    for start in range(0, N_ITEMS, 2000):
        store.write_neighbours(
            [
                (
                    f"i{n}",
                    NeighboursRecord(
                        1,
                        [f"i{m}" for m in covisit_rng.choice(by_cluster[cluster[n]], NEIGHBOURS)],
                        sorted(covisit_rng.uniform(0, 6, NEIGHBOURS).tolist(), reverse=True),
                    ),
                )
                for n in range(start, min(start + 2000, N_ITEMS))
            ]
        )
    for start in range(0, N_USERS, 2000):
        batch = []
        for n in range(start, min(start + 2000, N_USERS)):
            c = int(rng.integers(CLUSTERS))
            vector = (0.1 * (centers[c] + rng.normal(size=FACTORS))).astype(np.float32)
            seen = [f"i{i}" for i in rng.choice(by_cluster[c], int(rng.integers(10, 31)))]
            now = time.time()  # as the sink writes them (a record past its retention is gone)
            events = int(rng.integers(1, 200))
            record = UserRecord(
                events, now, now, vector_to_bytes(vector), seen[:20], seen, {"view": events}
            )
            batch.append((f"u{n}", record))
        store.write_users(batch)


def _endpoint_list(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = sorted(set(names) - set(ENDPOINTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown endpoints {unknown}; known: {list(ENDPOINTS)}")
    return names


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        port, template, rate, seconds, conns, seed = sys.argv[2:8]
        result = asyncio.run(
            _generate(int(port), template, float(rate), float(seconds), int(conns), int(seed))
        )
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--recall-users", type=int, default=500)
    parser.add_argument("--json")
    parser.add_argument(
        "--endpoints",
        type=_endpoint_list,
        default=list(ENDPOINTS),
        help="comma-separated subset of " + ", ".join(ENDPOINTS) + " (quick A/B runs)",
    )
    parser.add_argument("--workers", type=int, default=2, help="granian worker processes")
    parser.add_argument("--no-fixed", action="store_true", help="max req/s (wrk) only")
    args = parser.parse_args()
    if load_generator() is None:
        sys.exit("wrk (or oha) is needed for max req/s: ./dev bench installs it")

    run_dir = Path(tempfile.mkdtemp(prefix="freshrec-bench-serving-"))
    report: dict = {
        "cpus": os.cpu_count(),
        "items": N_ITEMS,
        "users": N_USERS,
        "factors": FACTORS,
        "rate": args.rate,
        "workers": args.workers,
    }
    with embedded_stack(run_dir) as base:
        port = free_port()
        settings = msgspec.structs.replace(
            base,
            factors=FACTORS,
            api_workers=args.workers,
            api_port=port,
            bench_endpoints=True,
        )
        store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, FACTORS)
        t0 = time.perf_counter()
        write_synthetic(store)
        report["write_s"] = round(time.perf_counter() - t0, 1)
        spawned = time.perf_counter()
        api = processes.spawn(
            processes.api_argv(),
            settings,
            run_dir / "logs" / "api.log",
            {"FRESHREC_API_WORKERS": str(args.workers), "FRESHREC_FACTORS": str(FACTORS)},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            processes.wait_http(url + "/health", 60, api)
            report["api_health_s"] = round(time.perf_counter() - spawned, 1)
            t0 = time.perf_counter()
            ready = 0
            while ready < 20:  # every worker (requests land on any) reports graph and copies
                state = get_json(url + "/v1/bench/index")
                loaded = state["graph_items"] == N_ITEMS and state["replica_loaded"]
                ready = ready + 1 if loaded else 0
                assert time.perf_counter() - t0 < 180, f"graph not built: {state}"
                time.sleep(0.05)
            report["graph_ready_s"] = round(time.perf_counter() - t0, 1)
            workers = worker_counts(url, args.workers).values()
            report["replica_load_s"] = max(w["replica_load_s"] for w in workers)
            report["replica_mb_per_worker"] = round(
                max(w["replica_bytes"] for w in workers) / 2**20, 1
            )
            time.sleep(1.5)  # popular lists refreshed
            run_generator(
                port, ENDPOINTS["recommendations"], args.rate, 3, args.connections, SEED + 3
            )
            full = not args.no_fixed and set(args.endpoints) == set(ENDPOINTS)
            if full:
                report["generator_ceiling_hello"] = run_generator(
                    port, ENDPOINTS["hello"], 0, 5, args.connections
                )
            for name in args.endpoints:
                template = ENDPOINTS[name]
                before = worker_counts(url, args.workers)
                fixed = (
                    {}
                    if args.no_fixed
                    else run_generator(port, template, args.rate, args.seconds, args.connections)
                )
                between = worker_counts(url, args.workers)
                fixed.update(run_wrk(port, template, args.wrk_seconds, run_dir))
                after = worker_counts(url, args.workers)
                if name == "recommendations":
                    for counter in ("result_cache", "replica"):
                        fixed[f"{counter}_hit_share_fixed"] = hit_share(before, between, counter)
                        fixed[f"{counter}_hit_share_wrk"] = hit_share(between, after, counter)
                report[name] = fixed
                print(name, fixed, flush=True)
            if full:
                report["recall_at_10"] = recall(store, url, args.recall_users)
        finally:
            processes.stop(api)
        if full:
            report["stages_us"] = stage_costs(settings)
        store.delete_namespace()
    if not full:  # a quick A/B run: what was measured, no summary
        print(json.dumps(report))
        return
    rec = report["recommendations"]
    rec["max_ratio_to_user_record"] = round(
        rec["max_req_s"] / report["user-record"]["max_req_s"], 3
    )
    rec["max_ratio_to_hello"] = round(rec["max_req_s"] / report["hello"]["max_req_s"], 3)
    rec["max_ratio_to_floor"] = round(rec["max_req_s"] / report["floor"]["max_req_s"], 3)
    print_table(report)
    print(
        f"start-up: /health answers {report['api_health_s']} s after spawning the API; graph "
        f"built and user-state copies loaded {report['graph_ready_s']} s later; copies loaded in {report['replica_load_s']} s, "
        f"{report['replica_mb_per_worker']} MB per worker"
    )
    print("\nCPU per request by stage, in process (µs, one thread):")
    for label, us in report["stages_us"].items():
        print(f"  {label:<55}{us:>8.1f}")
    print(
        f"  {'machine CPU per request at max req/s (CPUs / max)':<55}"
        f"{report['cpus'] * 1e6 / rec['max_req_s']:>8.1f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


async def _asgi_get(app: Any, path: str) -> None:
    """One GET through the ASGI app in this process (no HTTP server, no socket)."""

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)


def stage_costs(settings: Any, n: int = 2000) -> dict[str, float]:
    """CPU per request (µs, this thread) of each stage of a recommendation, in this process.

    Where the time of a request goes, measured on the same data right after the load runs:
    the framework alone (hello; the recommendations route with its recommender stubbed),
    the one Redis round trip, the graph query, the whole recommender and the whole request.
    Each stage runs over ``n`` users that no earlier stage or load run asked for. The app is
    new, so the recommender maps each co-visitation list to rows the first time it meets it
    (a server under load has most lists mapped already): the two recommender stages are an
    upper bound of the steady state.
    """
    from litestar.testing import TestClient

    from serving.app import create_app
    from serving.recommender import COVISIT_SOURCES, Filters, RequestContext

    app = create_app(settings)
    rng = np.random.default_rng(SEED + 4)
    users = [f"u{u}" for u in rng.choice(N_USERS, 6 * n, replace=False)]
    batches = iter([users[i * n : (i + 1) * n] for i in range(6)])
    loop = asyncio.new_event_loop()
    costs: dict[str, float] = {}

    def clock(label: str, calls: Iterable[Callable[[], object]]) -> None:
        calls = list(calls)
        started = time.thread_time()
        for call in calls:
            call()
        costs[label] = round((time.thread_time() - started) / len(calls) * 1e6, 1)

    def asgi(path: str) -> Callable[[], object]:
        return lambda: loop.run_until_complete(_asgi_get(app, path))

    with TestClient(app=app):
        recommender: Recommender = app.dependencies["recommender"].dependency()
        deadline = time.monotonic() + 180
        while (graph := recommender.index.current.candidates) is None or (
            graph.snapshot_size < N_ITEMS
        ):
            assert time.monotonic() < deadline, "graph not built"
            time.sleep(0.1)
        time.sleep(1.5)  # popular lists
        replica = recommender.replica
        assert replica is not None and replica.loaded.wait(180), "user state copies not loaded"
        for _ in range(300):  # warm up
            asgi("/v1/bench/hello")()
        clock("framework: hello route", [asgi("/v1/bench/hello")] * n)
        fixed = recommender.recommend("u0", 10)
        real = recommender.recommend
        recommender.recommend = lambda *args, **kwargs: fixed  # type: ignore[method-assign]
        clock(
            "framework: recommendations route, recommender stubbed",
            [asgi(f"/v1/users/{u}/recommendations") for u in next(batches)],
        )
        recommender.recommend = real  # type: ignore[method-assign]
        store = recommender.store
        clock(
            "redis: user record + co-visitation lists (one script)",
            [lambda u=u: store.get_user_with_neighbours(u, COVISIT_SOURCES) for u in next(batches)],
        )
        clock(
            "replica: the same from the process's copies",
            [lambda u=u: replica.user_with_neighbours(u, COVISIT_SOURCES) for u in next(batches)],
        )
        vectors = [
            vector_from_bytes(f.user.vector)
            for u in next(batches)
            if (f := store.get_user_with_neighbours(u, 0)) is not None
        ]
        clock(
            "ann: HNSW query (30 candidates)", [lambda v=v: graph.nearest(v, 30) for v in vectors]
        )
        clock(
            "recommender: whole personal path (user state from the copies, ann)",
            [lambda u=u: real(u, 10, Filters(), RequestContext()) for u in next(batches)],
        )
        clock(
            "whole request in process (route + recommender)",
            [asgi(f"/v1/users/{u}/recommendations") for u in next(batches)],
        )
    loop.close()
    return costs


def worker_counts(url: str, workers: int) -> dict[int, dict[str, int]]:
    """Per worker (pid): its counters (result cache and user-state copies hits and misses)."""
    counts: dict[int, dict[str, int]] = {}
    for _ in range(200):  # each request lands on either worker
        state = get_json(url + "/v1/bench/index")
        counts[state["pid"]] = state
        if len(counts) == workers:
            break
    return counts


def hit_share(
    before: dict[int, dict[str, int]], after: dict[int, dict[str, int]], counter: str
) -> float:
    """Share of ``counter``'s hits (``<counter>_hits`` / ``_misses``) between two counts."""

    def grown(field: str) -> int:
        return sum(after[p][field] - before.get(p, {}).get(field, 0) for p in after)

    hits, misses = grown(counter + "_hits"), grown(counter + "_misses")
    return round(hits / max(1, hits + misses), 4)


def recall(store: RedisStore, url: str, n_users: int) -> float:
    """Served top-10 (HTTP) against brute force (the same scoring, in this process)."""
    exact_index = ItemIndex(store, 0.1, ann_min_items=10**9)
    exact_index.refresh()
    exact_index.refresh_lists()
    exact = Recommender(store, exact_index)
    rng = np.random.default_rng(SEED + 2)
    hits = []
    for user in rng.choice(N_USERS, n_users, replace=False):
        served = get_json(f"{url}/v1/users/u{user}/recommendations?k=10")
        want = {i.item_id for i in exact.recommend(f"u{user}", 10).items}
        hits.append(len({i["item_id"] for i in served["items"]} & want) / 10)
    return round(float(np.mean(hits)), 4)


def print_table(report: dict) -> None:
    print(
        f"\n{report['items']:,} items x {report['factors']} factors, {report['users']:,} users; "
        f"granian {report['workers']} workers on {report['cpus']} CPUs; open loop at {report['rate']:,.0f} req/s"
    )
    print(
        f"{'endpoint':<16}{'achieved':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
        f"{'max ms':>9}{'errors':>8}{'max req/s':>11}"
    )
    for name in ENDPOINTS:
        r = report[name]
        print(
            f"{name:<16}{r['achieved_req_s']:>10,.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['p99_9_ms']:>10.2f}{r['max_ms']:>9.2f}{r['errors'] + r['non_2xx']:>8}"
            f"{r['max_req_s']:>11,.0f}"
        )
    rec = report["recommendations"]
    print(
        f"recommendations max req/s = {rec['max_ratio_to_user_record']:.2f} x user-record, "
        f"{rec['max_ratio_to_hello']:.2f} x hello, {rec['max_ratio_to_floor']:.2f} x floor; "
        f"recall@10 vs brute force "
        f"{report['recall_at_10']:.3f}; generator ceiling (closed loop, hello) "
        f"{report['generator_ceiling_hello']['achieved_req_s']:,.0f} req/s; answers from "
        f"the per-user result cache: {rec['result_cache_hit_share_fixed']:.1%} at fixed rate, "
        f"{rec['result_cache_hit_share_wrk']:.1%} under wrk; user state from the process's "
        f"copies (no Redis round trip): {rec['replica_hit_share_fixed']:.1%} at fixed rate, "
        f"{rec['replica_hit_share_wrk']:.1%} under wrk"
    )


if __name__ == "__main__":
    main()
