"""The load and the checks of deploy/smoke.sh, run on the host against the compose cluster.

Replays real Taobao events through the API port (haproxy → two API containers), asks for
recommendations all along, ``docker kill``s one Bytewax worker container mid-replay and starts
it again, then checks that the cluster applied every accepted event exactly once: its
per-user state equals that of a single-process worker (service ``worker-ref``, another key
prefix) that read the same topic and was never killed. Prints one JSON line of measurements;
exits 1 with the reason when a check fails.

    python deploy/smoke_drive.py --api http://127.0.0.1:PORT --redis-url rediss://...
        --kill CONTAINER [--events 20000] [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.integration, as drills

from freshrec.events import Event  # noqa: E402
from freshrec.replay import ReplayStats, iter_dataset_events, send_to_api  # noqa: E402
from state.records import decode_user  # noqa: E402
from state.store import RedisStore  # noqa: E402
from tests.integration.pipeline_checks import assert_same_state, wait_complete  # noqa: E402

CHUNK = 500
"""Events per POST (the replay client's batch) and per pacing step."""
POLL_S = 0.25


@dataclass
class Timeline:
    """What the sender, the prober and the monitor saw, in seconds since the start."""

    started: float = field(default_factory=time.monotonic)
    accepted: int = 0
    rejected: int = 0
    sent: int = 0
    kill_at_s: float | None = None
    restart_at_s: float | None = None
    applied_at_restart: int = 0
    resumed_at_s: float | None = None
    caught_up_at_s: float | None = None
    max_lag_before_kill: int = 0
    max_lag: int = 0
    replay_done_s: float | None = None
    rec_requests: int = 0
    rec_ok: int = 0
    rec_fallback: int = 0
    rec_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now_s(self) -> float:
        return time.monotonic() - self.started


def applied_total(store: RedisStore, users: list[str]) -> int:
    """Events applied so far, summed over users (one pipelined GET per user)."""
    pipe = store.client.pipeline(transaction=False)
    for user_id in users:
        pipe.get(store.keys.user(user_id))
    return sum(decode_user(blob).events for blob in pipe.execute() if blob is not None)


def docker(*args: str) -> None:
    """Run a docker CLI command; raise if it fails."""
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=60)


def kill_and_restart(
    container: str, down_s: float, timeline: Timeline, store: RedisStore, users: list[str]
) -> None:
    """SIGKILL the container, leave it down ``down_s``, start it again."""
    timeline.kill_at_s = timeline.now_s()
    docker("kill", container)
    time.sleep(down_s)
    docker("start", container)
    # The other process of the cluster died with its peer (compose restarts it), so nothing
    # was applied since the kill: processing has resumed once this total grows.
    timeline.applied_at_restart = applied_total(store, users)
    timeline.restart_at_s = timeline.now_s()


def send(
    events: list[Event],
    api: str,
    seconds: float,
    kill_after_chunks: int,
    killer: threading.Thread,
    timeline: Timeline,
) -> None:
    """POST the events in chunks spread over ``seconds``; start ``killer`` on the way.

    The replay goes on while the worker is down: the API and the broker do not need it.
    """
    chunks = [events[i : i + CHUNK] for i in range(0, len(events), CHUNK)]
    pause_s = seconds / len(chunks)
    for n, chunk in enumerate(chunks, start=1):
        due = timeline.started + n * pause_s
        stats: ReplayStats = send_to_api(chunk, api, batch_size=CHUNK, progress=False)
        with timeline.lock:
            timeline.sent += stats.sent
            timeline.accepted += stats.accepted
            timeline.rejected += stats.rejected
        if n == kill_after_chunks:
            killer.start()
        time.sleep(max(0.0, due - time.monotonic()))
    timeline.replay_done_s = timeline.now_s()
    killer.join()


def probe(api: str, users: list[str], stop: threading.Event, timeline: Timeline) -> None:
    """Ask for recommendations until ``stop``; every answer must be a 200 with a list."""
    with httpx.Client(timeout=5.0) as client:
        n = 0
        while not stop.is_set():
            user_id = users[n % len(users)]
            n += 1
            try:
                response = client.get(f"{api}/v1/users/{user_id}/recommendations", params={"k": 10})
                body = response.json() if response.status_code == 200 else None
                ok = body is not None and isinstance(body.get("items"), list)
                problem = "" if ok else f"HTTP {response.status_code}: {response.text[:200]}"
            except (httpx.HTTPError, ValueError) as exc:
                ok, body, problem = False, None, f"{type(exc).__name__}: {exc}"
            with timeline.lock:
                timeline.rec_requests += 1
                if ok:
                    timeline.rec_ok += 1
                    timeline.rec_fallback += bool(body and body.get("fallback"))
                else:
                    timeline.rec_errors.append(f"{timeline.now_s():.1f}s {problem}")
            time.sleep(0.05)


def monitor(store: RedisStore, users: list[str], stop: threading.Event, timeline: Timeline) -> None:
    """Measure the lag (accepted - applied) and the recovery.

    After the restart: when processing resumed, and when the cluster was caught up again (at
    most one chunk behind, as while it ran undisturbed).
    """
    while not stop.is_set():
        time.sleep(POLL_S)
        accepted = timeline.accepted  # read first: applied is then at least as recent
        applied = applied_total(store, users)
        now_s = timeline.now_s()
        if timeline.kill_at_s is None:
            timeline.max_lag_before_kill = max(timeline.max_lag_before_kill, accepted - applied)
        timeline.max_lag = max(timeline.max_lag, accepted - applied)
        if timeline.restart_at_s is None:
            continue
        if timeline.resumed_at_s is None and applied > timeline.applied_at_restart:
            timeline.resumed_at_s = now_s
        if timeline.resumed_at_s is not None and accepted - applied <= CHUNK:
            timeline.caught_up_at_s = now_s
            return


def main() -> int:
    """Replay, kill, restart, check; print the measurements as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default="fr")
    parser.add_argument("--ref-prefix", default="ref")
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--kill", required=True, help="container to docker kill mid-replay")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=40.0, help="spread the replay over")
    parser.add_argument("--kill-fraction", type=float, default=0.4)
    parser.add_argument("--down-s", type=float, default=2.0, help="between kill and start")
    parser.add_argument("--complete-timeout-s", type=float, default=300.0)
    args = parser.parse_args()

    events = list(iter_dataset_events("taobao", limit=args.events))
    per_user = Counter(e.user_id for e in events)
    users = sorted(per_user)
    cluster = RedisStore.from_url(args.redis_url, args.prefix, args.factors, timeout_s=10.0)
    reference = RedisStore.from_url(args.redis_url, args.ref_prefix, args.factors, timeout_s=10.0)
    timeline = Timeline()
    stop = threading.Event()
    threads = [
        threading.Thread(target=probe, args=(args.api, users, stop, timeline), daemon=True),
        threading.Thread(target=monitor, args=(cluster, users, stop, timeline), daemon=True),
    ]
    for thread in threads:
        thread.start()
    failure = ""
    exactly_once = "not checked"
    complete_s: float | None = None
    try:
        killer = threading.Thread(
            target=kill_and_restart, args=(args.kill, args.down_s, timeline, cluster, users)
        )
        kill_after_chunks = max(1, int(len(events) / CHUNK * args.kill_fraction))
        send(events, args.api, args.seconds, kill_after_chunks, killer, timeline)
        if timeline.rejected:
            failure = f"{timeline.rejected} events rejected by the API"
        else:
            try:
                wait_complete(cluster, per_user, Counter(), args.complete_timeout_s)
                wait_complete(reference, per_user, Counter(), args.complete_timeout_s)
                complete_s = timeline.now_s()
                time.sleep(2.0)  # anything applied twice would show up now
                over = [u for u in users if (r := cluster.get_user(u)) and r.events != per_user[u]]
                assert not over, f"{len(over)} users with events != accepted, e.g. {over[:5]}"
                assert_same_state(cluster, reference, per_user)
                exactly_once = "ok"
            except AssertionError as exc:
                exactly_once = "fail"
                failure = f"exactly-once check failed: {str(exc)[:500]}"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    if not failure and timeline.rec_errors:
        failure = (
            f"{len(timeline.rec_errors)} of {timeline.rec_requests} recommendation "
            f"requests failed, e.g. {timeline.rec_errors[:3]}"
        )
    if not failure and timeline.caught_up_at_s is None:
        failure = "the cluster never caught up after the restart"
    assert timeline.kill_at_s is not None and timeline.restart_at_s is not None
    result = {
        "events": timeline.sent,
        "accepted": timeline.accepted,
        "users": len(users),
        "replay_s": round(timeline.replay_done_s or 0.0, 1),
        "kill_at_s": round(timeline.kill_at_s, 1),
        "restart_at_s": round(timeline.restart_at_s, 1),
        "resumed_after_kill_s": _since(timeline.resumed_at_s, timeline.kill_at_s),
        "caught_up_after_kill_s": _since(timeline.caught_up_at_s, timeline.kill_at_s),
        "max_lag_before_kill": timeline.max_lag_before_kill,
        "max_lag": timeline.max_lag,
        "all_applied_at_s": None if complete_s is None else round(complete_s, 1),
        "rec_requests": timeline.rec_requests,
        "rec_ok": timeline.rec_ok,
        "rec_fallback": timeline.rec_fallback,
        "exactly_once": exactly_once,
    }
    print(json.dumps(result))
    if failure:
        print(f"smoke_drive: {failure}", file=sys.stderr)
        return 1
    return 0


def _since(at_s: float | None, origin_s: float) -> float | None:
    return None if at_s is None else round(at_s - origin_s, 1)


if __name__ == "__main__":
    sys.exit(main())
