"""Erasure on the live embedded stack: Tansu, redis-server, the worker and the API as processes.

``DELETE /v1/users/{id}`` removes the shopper from Redis at once (the API falls back to the
cold start) and from the worker's state when the tombstone arrives; a later event starts a new
user. Then the hard cases: the user's state parked in Redis by the idle eviction, and the
worker killed with SIGKILL and resumed from an *older* checkpoint (a backup of the recovery
store taken while the worker still held the user): the replay from that checkpoint's offsets
meets the tombstone again, and the shopper does not come back. Also the merge of an anonymous
id into a logged-in one, through the stream.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from freshrec import processes
from freshrec.events import Event, encode_event
from freshrec.processes import running_pipeline
from freshrec.settings import Settings
from freshrec.stack import free_port
from operators import user_pseudonym
from serving.auth import API_KEY_HEADER
from state.store import RedisStore
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

ADMIN_KEY = "erasure-admin-key-0123456789"
ADMIN = {API_KEY_HEADER: ADMIN_KEY}


def events_of(user: str, items: list[str], tag: str) -> list[Event]:
    now = datetime.now(UTC)
    return [
        Event(event_id=f"{tag}-{user}-{n}", user_id=user, item_id=item, type="view", ts=now)
        for n, item in enumerate(items)
    ]


def send(settings: Settings, events: list[Event]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for e in events:
        producer.produce(settings.events_topic, key=e.user_id.encode(), value=encode_event(e))
    assert producer.flush(10) == 0


def record_events(store: RedisStore, user: str) -> int | None:
    record = store.get_user(user)
    return None if record is None else record.events


def stored_traces(store: RedisStore, user: str) -> list[str]:
    """Every place the user could still be found in Redis."""
    k = store.keys
    found = [key for key in (k.user(user), k.user_state(user)) if store.client.exists(key)]
    if store.client.zscore(k.parked_users, user) is not None:
        found.append(k.parked_users)
    pseudonym = user_pseudonym(user).encode()
    for stream in (k.holdout, k.alarms):
        if any(f.get(b"user") == pseudonym for _, f in store.client.xrange(stream)):
            found.append(stream)
    for key in store.client.scan_iter(match=k.pattern(), count=1000):
        if user.encode() in key.split(b":")[-1:]:
            found.append(key.decode())
    return sorted(set(found))


def erase(api: httpx.Client, user: str) -> str:
    response = api.delete(f"/v1/users/{user}", headers=ADMIN)
    assert response.status_code == 202, response.text
    return str(response.json()["erasure_id"])


def erasure_done_at(api: httpx.Client, erasure_id: str) -> float | None:
    status = api.get(f"/v1/erasures/{erasure_id}", headers=ADMIN).json()
    return None if status["status"] != "done" else float(status["completed_at"])


def test_delete_forgets_the_shopper_and_later_events_start_anew(
    make_settings, tmp_path: Path
) -> None:
    settings = make_settings(admin_api_key=ADMIN_KEY, prequential_sample_every=1)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    user, other = "shopper-erased", "shopper-kept"
    with running_pipeline(settings, tmp_path) as pipe, httpx.Client(base_url=pipe.api_url) as api:
        send(settings, events_of(user, [f"i{n}" for n in range(8)], "a"))
        send(settings, events_of(other, ["i1", "i2", "i9"], "a"))
        wait_until(lambda: record_events(store, user) == 8, 30)
        wait_until(lambda: record_events(store, other) == 3, 30)
        assert stored_traces(store, user)  # record and holdout samples

        erasure_id = erase(api, user)
        # Serving falls back to the cold start at once: nothing personal, no explanations.
        recs = api.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        assert not any(it["reason"].startswith("because you viewed") for it in recs["items"])
        # The worker applies the tombstone: state dropped, keys deleted, erasure recorded.
        wait_until(lambda: erasure_done_at(api, erasure_id), 30)
        assert stored_traces(store, user) == []
        assert record_events(store, other) == 3, "other users are untouched"

        # A later event starts a new user: one event, not nine.
        send(settings, events_of(user, ["j1"], "b"))
        wait_until(lambda: record_events(store, user) is not None, 30)
        assert record_events(store, user) == 1
        assert store.get_user(user).recent == ["j1"]  # type: ignore[union-attr]


def test_merge_moves_the_anonymous_history_and_erases_the_anonymous_id(
    make_settings, tmp_path: Path
) -> None:
    settings = make_settings(admin_api_key=ADMIN_KEY)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    anonymous, member = "anon-7f3a", "member-42"
    with running_pipeline(settings, tmp_path) as pipe, httpx.Client(base_url=pipe.api_url) as api:
        send(settings, events_of(anonymous, ["shoe", "sock", "hat"], "a"))
        send(settings, events_of(member, ["book"], "a"))
        wait_until(lambda: record_events(store, anonymous) == 3, 30)
        wait_until(lambda: record_events(store, member) == 1, 30)

        merged = api.post(
            f"/v1/users/{member}/merge", json={"source_user_id": anonymous}, headers=ADMIN
        )
        assert merged.status_code == 202, merged.text
        assert merged.json()["events"] == 3
        wait_until(lambda: record_events(store, member) == 4, 30)
        assert store.get_user(member).recent == ["hat", "sock", "shoe", "book"]  # type: ignore[union-attr]
        wait_until(lambda: erasure_done_at(api, merged.json()["erasure_id"]), 30)
        assert stored_traces(store, anonymous) == []
        # A retried merge finds nothing left to merge; the member's events stay as they are.
        again = api.post(
            f"/v1/users/{member}/merge", json={"source_user_id": anonymous}, headers=ADMIN
        )
        assert again.status_code == 404
        assert record_events(store, member) == 4


@pytest.mark.parametrize("held", ["in memory", "parked"])
def test_an_older_checkpoint_or_a_parked_state_does_not_bring_the_shopper_back(
    make_settings, tmp_path: Path, held: str
) -> None:
    settings = make_settings(
        admin_api_key=ADMIN_KEY,
        user_idle_ttl_s=1.0 if held == "parked" else 3600.0,
        api_port=free_port(),
    )
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    recovery, backup = tmp_path / "recovery", tmp_path / "recovery-backup"
    processes.init_recovery(str(recovery), 1)

    def worker(directory: Path, n: int) -> object:
        argv = processes.worker_argv(recovery_dir=str(directory), snapshot_s=1, backup_s=3600)
        return processes.spawn(argv, settings, tmp_path / f"worker-{n}.log")

    user, other = "shopper-gone", "shopper-stays"
    api_proc = processes.spawn(processes.api_argv(), settings, tmp_path / "api.log")
    running = [api_proc, worker(recovery, 0)]
    url = f"http://127.0.0.1:{settings.api_port}"
    try:
        processes.wait_http(url + "/health", 30.0, api_proc)
        send(settings, events_of(user, [f"i{n}" for n in range(6)], "a"))
        send(settings, events_of(other, ["i1", "i7"], "a"))
        wait_until(lambda: record_events(store, user) == 6, 30)
        wait_until(lambda: record_events(store, other) == 2, 30)
        if held == "parked":
            wait_until(lambda: store.parked_user_state(user), 30, 0.1)
        time.sleep(2.5)  # a checkpoint (every second) now holds the user, or their parking
        # A backup of the recovery store, from before the erasure (the worker stopped cleanly
        # to copy it, then resumed).
        processes.stop(running.pop())
        shutil.copytree(recovery, backup)
        running.append(worker(recovery, 1))

        with httpx.Client(base_url=url) as api:
            erasure_id = erase(api, user)
            first_done = wait_until(lambda: erasure_done_at(api, erasure_id), 60)
            assert stored_traces(store, user) == []

            # The worker crashes and is resumed from the older checkpoint: it holds the user
            # again (or their parked state's index entry), and its offsets precede the
            # tombstone, which the replay meets again.
            processes.kill(running.pop())
            running.append(worker(backup, 2))
            wait_until(lambda: (erasure_done_at(api, erasure_id) or 0) > first_done, 60)  # type: ignore[operator]
            assert stored_traces(store, user) == []
            recs = api.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
            assert not any(it["reason"].startswith("because you viewed") for it in recs["items"])

            # The user's next event starts a new user: their old state did not come back.
            send(settings, events_of(user, ["j1"], "b"))
            wait_until(lambda: record_events(store, user) is not None, 30)
            time.sleep(0.5)
            assert record_events(store, user) == 1
            assert store.get_user(user).recent == ["j1"]  # type: ignore[union-attr]
            assert record_events(store, other) == 2
    finally:
        for proc in reversed(running):
            processes.stop(proc)  # type: ignore[arg-type]


def test_settings_reject_a_retention_of_nothing() -> None:
    from freshrec.settings import load_settings

    with pytest.raises(ValueError, match="user_retention_s"):
        load_settings(environ={"FRESHREC_USER_RETENTION_S": "0"})
    assert load_settings(environ={"FRESHREC_USER_RETENTION_S": "60"}).user_retention_s == 60
