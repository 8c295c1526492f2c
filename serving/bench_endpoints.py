"""Reference endpoints for the serving benchmark, mounted only when ``bench_endpoints`` is on.

``/v1/bench/hello`` measures the server and framework alone; ``/v1/bench/user-record/{id}``
adds the one Redis GET every recommendation needs. Recommendations are reported as a ratio
to these, measured in the same run on the same server.
"""

from __future__ import annotations

import os

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from serving.recommender import Recommender
from state.store import RedisStore


class Hello(msgspec.Struct, frozen=True):
    """The smallest answer."""

    hello: str


class UserRecordVersion(msgspec.Struct, frozen=True):
    """What the user-record endpoint returns: the record's version (0: unknown user)."""

    user_id: str
    version: int


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

    @get("/index", sync_to_thread=False)
    def index(self, recommender: NamedDependency[Recommender]) -> IndexState:
        matrix = recommender.index.current
        graph = matrix.candidates
        return IndexState(
            matrix.size,
            0 if graph is None else graph.snapshot_size,
            0 if graph is None else int(graph.delta_rows.size),
            os.getpid(),
            recommender.result_cache_hits,
            recommender.result_cache_misses,
        )
