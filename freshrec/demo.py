"""The live demo: the whole engine on the embedded stack, fed with the real Taobao log.

Starts the broker and Redis (unless a stack is already up), the worker and the API as real
processes, replays the head of the Taobao log through the ingest API, then for a few users
sends their *next* real events from the log and shows their recommendations before and
after, with the time it took for the change to be served. Everything it started is stopped
at the end or on Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import msgspec
import polars as pl

from freshrec import processes
from freshrec.datasets import load_taobao
from freshrec.events import Event, encode_event
from freshrec.replay import iter_events, send_to_api
from freshrec.settings import Settings, load_settings
from freshrec.stack import (
    LocalStack,
    create_topics,
    read_stack_info,
    wait_for_kafka,
    wait_for_redis,
)
from state.records import CatalogueItem
from state.store import RedisStore

DEMO_USERS = 3
NEXT_EVENTS = 3
DEMO_CATALOGUE_SIZE = 24


def _say(text: str = "") -> None:
    print(text, flush=True)


@contextmanager
def _stack(settings: Settings) -> Iterator[Settings]:
    """Use the recorded stack if one is up, else start one for the demo's lifetime."""
    info = read_stack_info(settings.run_dir)
    if info is not None:
        try:
            wait_for_kafka(info.kafka_bootstrap, 3.0)
            wait_for_redis(info.redis_url, 3.0)
            yield msgspec.structs.replace(
                settings, kafka_bootstrap=info.kafka_bootstrap, redis_url=info.redis_url
            )
            return
        except Exception:  # recorded but dead: start a fresh one below
            _say("recorded stack does not answer; starting a new one")
    local = LocalStack(settings)
    info = local.start()
    _say(f"started broker {info.kafka_bootstrap} and Redis {info.redis_url}")
    try:
        yield msgspec.structs.replace(
            settings, kafka_bootstrap=info.kafka_bootstrap, redis_url=info.redis_url
        )
    finally:
        local.stop()
        _say("stopped broker and Redis")


@contextmanager
def _process(argv: list[str], settings: Settings, log: Path) -> Iterator[object]:
    proc = processes.spawn(argv, settings, log)
    try:
        yield proc
    finally:
        processes.stop(proc)


def demo_catalogue(history: pl.DataFrame, size: int = DEMO_CATALOGUE_SIZE) -> pl.DataFrame:
    """The storefront's products: the ``size`` items most interacted with in ``history``.

    Columns as ``freshrec import catalogue`` reads them. The Taobao log has ids only, so the
    titles are labels made from them and the prices a fixed function of the id.
    """
    top = (
        history.group_by("item_id")
        .agg(pl.len().alias("n"), pl.col("category_id").first())
        .sort(["n", "item_id"], descending=[True, False])
        .head(size)
    )
    return top.select(
        "item_id",
        "category_id",
        price=(pl.col("item_id").hash(seed=7) % 20_000 + 99).cast(pl.Float64) / 100,
        available=pl.lit(True),
        title=pl.lit("Item ") + pl.col("item_id"),
    )


def _pick_users(history: pl.DataFrame, future: pl.DataFrame) -> list[str]:
    """Users with a long history in the replayed slice and real events right after it."""
    counts = history.group_by("user_id").len().rename({"len": "n"})
    upcoming = future.group_by("user_id").len().filter(pl.col("len") >= NEXT_EVENTS)
    ranked = counts.join(upcoming, on="user_id").sort(["n", "user_id"], descending=[True, False])
    return ranked["user_id"].head(DEMO_USERS).to_list()


def _show(title: str, recs: dict[str, object]) -> None:
    _say(f"    {title}")
    for item in recs["items"][:5]:  # type: ignore[index]
        _say(f"      {item['item_id']:>9}  {item['score']:+.3f}  {item['reason']}")


def run_demo(limit: int = 20_000, keep_running: bool = False) -> int:
    """Run the demo; return the process exit code."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    tag = time.strftime("%Y%m%d%H%M%S")
    base = load_settings()
    settings = msgspec.structs.replace(
        base,
        events_topic=f"demo-events-{tag}",
        dlq_topic=f"demo-events-dlq-{tag}",
        redis_prefix=f"demo{tag}",
    )
    frame = load_taobao()
    history, future = frame.head(limit), frame.slice(limit)
    users = _pick_users(history, future)
    logs = Path(settings.run_dir) / "logs"
    with ExitStack() as stack:
        try:
            settings = stack.enter_context(_stack(settings))
            create_topics(
                settings.kafka_bootstrap,
                {settings.events_topic: settings.events_partitions, settings.dlq_topic: 1},
            )
            store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
            stack.callback(store.delete_namespace)
            api_url = f"http://{settings.api_host}:{settings.api_port}"
            stack.enter_context(_process(processes.worker_argv(), settings, logs / "worker.log"))
            api = stack.enter_context(_process(processes.api_argv(), settings, logs / "api.log"))
            processes.wait_http(api_url + "/health", 30.0, api)  # type: ignore[arg-type]
            _say(f"worker and API up; API docs: {api_url}/docs")

            _say(f"\nreplaying the first {len(history):,} events of the Taobao log via the API")
            stats = send_to_api(
                iter_events(history, id_prefix="taobao-"), api_url, total=len(history)
            )
            _say(f"  {stats.accepted:,} accepted at {stats.events_per_s:,.0f} events/s")
            shop = demo_catalogue(history)
            written = store.put_catalogue(
                [CatalogueItem(**row) for row in shop.iter_rows(named=True)]
            )
            _say(f"  {written} products in the catalogue: the storefront is {api_url}/shop")
            client = stack.enter_context(httpx.Client(base_url=api_url, timeout=5.0))
            _wait_caught_up(store, history, client)

            for user_id in users:
                _demo_user(client, user_id, future.filter(pl.col("user_id") == user_id))
            _say(f"\nAPI docs: {api_url}/docs   shop: {api_url}/shop   health: {api_url}/health")
            if keep_running:
                _say("running; Ctrl-C to stop")
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            _say("\nstopping")
    _say("demo finished; everything it started is stopped")
    return 0


def _wait_caught_up(store: RedisStore, history: pl.DataFrame, client: httpx.Client) -> None:
    last_user = history["user_id"][-1]
    expected = history.filter(pl.col("user_id") == last_user).height
    started = time.monotonic()
    while True:
        record = store.get_user(last_user)
        if record is not None and record.events >= expected:
            break
        if time.monotonic() - started > 120:
            raise RuntimeError("the dataflow did not catch up within 120 s; see logs/worker.log")
        time.sleep(0.05)
    while client.get("/health").json()["items_in_index"] == 0:
        time.sleep(0.05)
    _say(f"  dataflow caught up {time.monotonic() - started:.2f} s after the replay ended")


def _demo_user(client: httpx.Client, user_id: str, upcoming: pl.DataFrame) -> None:
    path = f"/v1/users/{user_id}/recommendations"
    before = client.get(path, params={"k": 10}).json()
    next_events: list[Event] = list(iter_events(upcoming.head(NEXT_EVENTS), id_prefix="taobao-"))
    _say(f"\nuser {user_id}")
    _show("before:", before)
    items = ", ".join(f"{e.type} {e.item_id}" for e in next_events)
    _say(f"    new events: {items}")
    body = b"[" + b",".join(encode_event(e) for e in next_events) + b"]"
    posted = time.monotonic()
    response = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    response.raise_for_status()
    before_ids = [it["item_id"] for it in before["items"]]
    while True:
        after = client.get(path, params={"k": 10}).json()
        if [it["item_id"] for it in after["items"]] != before_ids:
            break
        if time.monotonic() - posted > 5:
            _say("    (recommendations unchanged after 5 s)")
            break
        time.sleep(0.002)
    _say(f"    changed {1000 * (time.monotonic() - posted):.0f} ms after the POST")
    _show("after:", after)


if __name__ == "__main__":
    sys.exit(run_demo())
