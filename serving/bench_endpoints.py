"""Reference endpoints for the serving benchmark, mounted only when ``bench_endpoints`` is on.

``/v1/bench/hello`` measures the server and framework alone; ``/v1/bench/user-record/{id}``
adds the one Redis GET every recommendation needs; ``/v1/bench/floor/{id}`` does what no
personal answer can skip (the one Redis read of record and co-visitation lists, the graph
query) and nothing else, so its latency bounds what any ranking on top of it can reach.
Recommendations are reported as a ratio to these, measured in the same run on the same server.
"""

from __future__ import annotations

import os

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from operators import ANN_FETCH_MIN
from serving.recommender import COVISIT_SOURCES, Recommender
from state.records import vector_from_bytes
from state.store import RedisStore


class Hello(msgspec.Struct, frozen=True):
    """The smallest answer."""

    hello: str


class UserRecordVersion(msgspec.Struct, frozen=True):
    """What the user-record endpoint returns: the record's version (0: unknown user)."""

    user_id: str
    version: int


class FloorAnswer(msgspec.Struct, frozen=True):
    """What the floor endpoint returns: how many graph candidates and co-visitation lists."""

    user_id: str
    candidates: int
    covisitation_lists: int


class IndexState(msgspec.Struct, frozen=True):
    """The item index as a worker sees it (the benchmark waits for the graph)."""

    items: int
    graph_items: int
    delta_rows: int
    pid: int
    result_cache_hits: int
    """Personal answers this worker served from its per-user result cache..."""
    result_cache_misses: int
    """... and computed (the benchmark reports the share, so cached answers are visible)."""
    replica_loaded: bool
    """The worker's copies of user records and lists have loaded (or are off)."""
    replica_hits: int
    """Requests whose user state came from the worker's copies ..."""
    replica_misses: int
    """... and from a Redis round trip."""
    replica_load_s: float
    """How long the worker's copies took to load at start."""
    replica_bytes: int
    """What the copies hold (``UserStateReplica.held_bytes``)."""


class BenchController(Controller):
    """Benchmark references (disabled unless ``FRESHREC_BENCH_ENDPOINTS=true``)."""

    path = "/v1/bench"
    include_in_schema = False

    @get("/hello", sync_to_thread=False)
    def hello(self) -> Hello:
        return Hello("world")

    @get("/user-record/{user_id:str}", sync_to_thread=False)
    def user_record(self, user_id: str, store: NamedDependency[RedisStore]) -> UserRecordVersion:
        user = store.get_user(user_id)
        return UserRecordVersion(user_id, 0 if user is None else user.version)

    @get("/floor/{user_id:str}", sync_to_thread=False)
    def floor(self, user_id: str, recommender: NamedDependency[Recommender]) -> FloorAnswer:
        fetched = recommender.store.get_user_with_neighbours(user_id, COVISIT_SOURCES)
        graph = recommender.index.current.candidates
        if fetched is None or graph is None:
            return FloorAnswer(user_id, 0, 0)
        rows, _ = graph.nearest(vector_from_bytes(fetched.user.vector), ANN_FETCH_MIN)
        lists = sum(n is not None for n in fetched.neighbours)
        return FloorAnswer(user_id, int(rows.size), lists)

    @get("/index", sync_to_thread=False)
    def index(self, recommender: NamedDependency[Recommender]) -> IndexState:
        matrix = recommender.index.current
        graph = matrix.candidates
        replica = recommender.replica
        return IndexState(
            matrix.size,
            0 if graph is None else graph.snapshot_size,
            0 if graph is None else int(graph.delta_rows.size),
            os.getpid(),
            recommender.result_cache_hits,
            recommender.result_cache_misses,
            replica is None or replica.loaded.is_set(),
            0 if replica is None else replica.hits,
            0 if replica is None else replica.misses,
            0.0 if replica is None else round(replica.load_s, 3),
            0 if replica is None else replica.held_bytes,
        )
