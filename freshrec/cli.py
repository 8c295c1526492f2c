"""The ``freshrec`` command: local stack, worker, API, replay and the live demo."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from freshrec.settings import load_settings


def _stack(args: argparse.Namespace) -> int:
    from freshrec.stack import stack_down, stack_up

    settings = load_settings()
    if args.action == "up":
        info = stack_up(settings)
        state = "already running" if info.reused else "started"
        print(f"stack {state}: kafka={info.kafka_bootstrap} redis={info.redis_url}")
        print(f"recorded in {settings.stack_file}")
        return 0
    stopped = stack_down(settings)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _topics(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from freshrec.stack import create_topics, wait_for_kafka

    settings = load_settings()
    wanted = {settings.events_topic: settings.events_partitions, settings.dlq_topic: 1}
    try:
        wait_for_kafka(settings.kafka_bootstrap, args.wait_s, settings.kafka_config)
        create_topics(settings.kafka_bootstrap, wanted, client_config=settings.kafka_config)
    except (TimeoutError, KafkaException) as exc:
        print(f"freshrec topics: {exc}", file=sys.stderr)
        return 1
    print("topics ready: " + ", ".join(f"{name} ({n} partitions)" for name, n in wanted.items()))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from freshrec.processes import child_env, init_recovery, worker_argv

    settings = load_settings()
    if args.recovery_dir and init_recovery(args.recovery_dir, settings.recovery_partitions):
        print(
            f"initialised {settings.recovery_partitions} recovery partitions in "
            f"{args.recovery_dir}",
            file=sys.stderr,
        )
    argv = worker_argv(
        workers_per_process=args.workers,
        recovery_dir=args.recovery_dir,
        snapshot_s=args.snapshot_s,
        backup_s=args.backup_s,
        process_id=args.process_id,
        addresses=args.addresses.split(";") if args.addresses else (),
    )
    env = child_env(settings)
    if settings.worker_metrics_port:
        # Bytewax's own API server exposes /metrics (ours and Bytewax's) on this port.
        env["BYTEWAX_DATAFLOW_API_ENABLED"] = "true"
        env["BYTEWAX_DATAFLOW_API_PORT"] = str(
            settings.worker_metrics_port + (args.process_id or 0)
        )
        # Bytewax writes the flow's JSON description for its API server into this directory
        # (default: the working directory): keep it in the run dir, not the repository.
        # It must exist (Bytewax dies with a bare FileNotFoundError otherwise): a fresh
        # container's run dir does not.
        run_dir = Path(settings.run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = str(run_dir)
    # exec: the worker *is* this process, so signals and exit codes are bytewax's own.
    os.execvpe(argv[0], argv, env)
    return 0  # unreachable


def _serve(args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces

    settings = load_settings()
    workers = args.workers or settings.api_workers
    # A worker serves one request at a time on one core: BLAS threads of its own would only
    # spin against the other workers (numpy reads this when the worker imports it).
    for threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(threads, "1")
    if workers > 1:
        # Several server processes: Prometheus metrics are aggregated through files.
        prom_dir = Path(settings.run_dir) / "prometheus-api"
        shutil.rmtree(prom_dir, ignore_errors=True)
        prom_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
    Granian(
        "serving.app:app_from_env",
        factory=True,
        interface=Interfaces.ASGI,
        address=args.host or settings.api_host,
        port=args.port or settings.api_port,
        workers=workers,
        log_access=False,
    ).serve()
    return 0


def _replay(args: argparse.Namespace) -> int:
    from freshrec.replay import iter_dataset_events, send_to_api, send_to_kafka

    settings = load_settings()
    speed = None if args.speed in (None, "max") else float(args.speed)
    events, total = iter_dataset_events(args.dataset, limit=args.limit), args.limit
    if args.via == "kafka":
        stats = send_to_kafka(events, settings, speed=speed, total=total)
    else:
        base = args.api or f"http://{settings.api_host}:{settings.api_port}"
        stats = send_to_api(events, base, speed=speed, total=total)
    print(
        f"replayed {stats.sent} events: {stats.accepted} accepted, {stats.rejected} rejected, "
        f"{stats.events_per_s:,.0f} events/s"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from freshrec.bulk_import import import_catalogue, import_events

    settings = load_settings()
    if args.what == "events":
        stats = import_events(args.path, settings, topic=args.topic)
        print(
            f"imported {stats.rows:,} rows: {stats.imported:,} events to "
            f"{args.topic or settings.events_topic}, {stats.rejected:,} dead-lettered to "
            f"{settings.dlq_topic}; {stats.rows_per_s:,.0f} events/s"
        )
    else:
        from state.store import RedisStore

        store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
        stats = import_catalogue(args.path, store)
        print(
            f"imported {stats.rows:,} rows: {stats.imported:,} catalogue entries written, "
            f"{stats.rejected:,} rejected; {stats.rows_per_s:,.0f} rows/s"
        )
    for line in stats.first_errors:
        print(f"  rejected {line}", file=sys.stderr)
    return 0


def _lifecycle(args: argparse.Namespace) -> int:
    import logging

    from freshrec.lifecycle import build_lifecycle, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    lifecycle = build_lifecycle(load_settings())
    if args.once:
        for action in lifecycle.step():
            print(action)
        return 0
    run(lifecycle, args.interval_s)
    return 0


def _bench(args: argparse.Namespace) -> int:
    import runpy

    from freshrec.processes import PROJECT_ROOT

    harness = PROJECT_ROOT / "benchmarks" / "harness.py"
    sys.argv = [str(harness), args.which, *(["--quick"] if args.quick else [])]
    try:
        runpy.run_path(str(harness), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _archive(args: argparse.Namespace) -> int:
    from freshrec.archive import purge_erased

    root = args.dir or load_settings().archive_dir
    if not root:
        print("freshrec archive: no archive (set FRESHREC_ARCHIVE_DIR or --dir)", file=sys.stderr)
        return 2
    stats = purge_erased(Path(root))
    print(
        f"purged {stats.rows_removed} rows of erased users: {stats.files_rewritten} files "
        f"rewritten, {stats.files_removed} removed"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from freshrec.demo import run_demo

    return run_demo(limit=args.limit, keep_running=args.keep_running)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="freshrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="start/stop the embedded broker and Redis")
    stack.add_argument("action", choices=["up", "down"])
    stack.set_defaults(func=_stack)

    topics = sub.add_parser(
        "topics", help="create the events and dead-letter topics (existing ones are kept)"
    )
    topics.add_argument("--wait-s", type=float, default=60.0, help="how long to wait for Kafka")
    topics.set_defaults(func=_topics)

    worker = sub.add_parser("worker", help="run the dataflow (python -m bytewax.run)")
    worker.add_argument("-w", "--workers", type=int, default=1, help="threads per process")
    worker.add_argument("-r", "--recovery-dir", help="bytewax recovery store directory")
    worker.add_argument("-s", "--snapshot-s", type=int, default=10)
    worker.add_argument("-b", "--backup-s", type=int, default=60)
    worker.add_argument("-i", "--process-id", type=int, help="this process' index in a cluster")
    worker.add_argument("-a", "--addresses", help="host:port of every process, ';'-separated")
    worker.set_defaults(func=_worker)

    serve = sub.add_parser("serve", help="run the HTTP API under granian")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int, help="default: FRESHREC_API_PORT (8000)")
    serve.add_argument("--workers", type=int, help="server worker processes")
    serve.set_defaults(func=_serve)

    replay = sub.add_parser("replay", help="replay a real dataset as events")
    replay.add_argument("dataset", choices=["taobao", "movielens", "diginetica"])
    replay.add_argument("--speed", help="N times real time, or 'max' (default)")
    replay.add_argument("--limit", type=int, help="first N events in time order")
    replay.add_argument("--via", choices=["api", "kafka"], default="api")
    replay.add_argument("--api", help="API base URL (default: from settings)")
    replay.set_defaults(func=_replay)

    importer = sub.add_parser(
        "import",
        help="bulk import events (to Kafka) or the catalogue (to Redis) from CSV or Parquet",
        description="events: columns event_id, user_id, item_id, type, ts (RFC 3339 text, or "
        "unix seconds), optional session_id, category_id, recommendation_id and context "
        "columns (user_agent, device, country, region, city, page, referrer); invalid rows go "
        "to the dead-letter topic. catalogue: item_id, optional category_id, price, "
        "available, title.",
    )
    importer.add_argument("what", choices=["events", "catalogue"])
    importer.add_argument("path", help="a .csv, .tsv or .parquet file")
    importer.add_argument("--topic", help="events only: another topic than the events topic")
    importer.set_defaults(func=_import)

    lifecycle = sub.add_parser(
        "lifecycle", help="snapshot, validate, promote and roll back model versions"
    )
    lifecycle.add_argument("--once", action="store_true", help="one step, then exit")
    lifecycle.add_argument("--interval-s", type=float, default=5.0)
    lifecycle.set_defaults(func=_lifecycle)

    bench = sub.add_parser("bench", help="run benchmarks; write a Markdown report with plots")
    bench.add_argument(
        "which",
        choices=[
            "all",
            "freshness",
            "pipeline",
            "serving",
            "quality",
            "sessions",
            "live_quality",
            "responsiveness",
            "drift",
            "erasure",
            "merchandising",
        ],
    )
    bench.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    bench.set_defaults(func=_bench)

    archive = sub.add_parser(
        "archive",
        help="purge erased users' rows from the Parquet archive",
        description="purge: rewrite the archive's files without the rows of users in its "
        "erasure ledger (DELETE /v1/users/{id}); each file is replaced atomically.",
    )
    archive.add_argument("action", choices=["purge"])
    archive.add_argument("--dir", help="archive root (default: FRESHREC_ARCHIVE_DIR)")
    archive.set_defaults(func=_archive)

    demo = sub.add_parser("demo", help="the live demo on the embedded stack")
    demo.add_argument("--limit", type=int, default=20_000, help="Taobao events to replay")
    demo.add_argument("--keep-running", action="store_true", help="keep the API up until Ctrl-C")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``freshrec`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # bad settings or arguments: a message, not a trace
        print(f"freshrec: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
