"""Every key of a namespace shares one Redis Cluster slot (the ``{prefix}`` hash tag).

A Redis in cluster mode refuses a command or script whose keys lie in different slots
(CROSSSLOT), even when one node serves every slot, so a one-node cluster started here is
enough to show that the store's multi-key operations work on Redis Cluster.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from freshrec.stack import free_port, redis_server_binary
from operators import user_pseudonym
from state.keys import Keys
from state.records import CatalogueItem, NeighboursRecord, Rule
from state.store import RedisStore
from tests.state.test_store import FACTORS, item, user_record

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Redis Cluster owning all 16384 slots."""
    work: Path = tmp_path_factory.mktemp("redis-cluster")
    # The cluster bus listens on port + 10000, which must be a valid port too.
    port = next(p for p in iter(free_port, None) if p < 55_000)
    server = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(work / "nodes.conf"),
            "--dir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the cluster-mode redis-server did not start"
                time.sleep(0.05)
        while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the one-node cluster never reached state ok"
            time.sleep(0.05)
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait(10)


def test_keys_of_a_namespace_share_one_slot(cluster_url: str) -> None:
    client = redis.Redis.from_url(cluster_url)
    keys = Keys("fr")
    names = [
        keys.user("u1"),
        keys.user("u2:{x}"),
        keys.item_factors,
        keys.neighbours("i9"),
        keys.catalogue_seq,
        keys.monitor("api"),
        keys.model_blob("v1"),
        keys.rules,
        keys.rules_version,
    ]
    assert {client.execute_command("CLUSTER", "KEYSLOT", name) for name in names} == {
        client.execute_command("CLUSTER", "KEYSLOT", "{fr}")
    }
    # Without the tag the same multi-key command is refused: the test above can fail.
    with pytest.raises(redis.ResponseError, match="same slot"):
        client.mset({"fr:u:u1": b"1", "fr:u:u2": b"2"})
    client.close()


def test_multi_key_operations_work_on_a_cluster(cluster_url: str) -> None:
    store = RedisStore.from_url(cluster_url, "fr", FACTORS)
    try:
        # MSET of many users + HSET of their versions, in one round trip
        assert store.write_users([(f"u{n}", user_record(n + 1)) for n in range(50)]) == 50
        # one EVAL over the item keys (factors, versions, change log and its sequence)
        assert store.write_items([item(f"i{n}", 1, float(n)) for n in range(20)]) == 20
        assert sorted(store.read_item_changes(0).item_ids) == sorted(f"i{n}" for n in range(20))
        assert store.write_neighbours([("i1", NeighboursRecord(1, ["i2"], [1.0]))]) == 1
        # a script that reads keys it was not given (the user's recent items' neighbours)
        with_neighbours = store.get_user_with_neighbours("u0", sources=2)
        assert with_neighbours is not None and with_neighbours.user == user_record(1)
        # EVAL over the three catalogue keys
        assert store.put_catalogue([CatalogueItem(item_id="i1", title="one")]) == 1
        assert store.catalogue_item("i1") == CatalogueItem(item_id="i1", title="one")
        store.park_user_states([("u1", b"state")], ttl_s=60)
        assert store.parked_user_state("u1") == b"state"
        # a transaction over the rules hash and its version counter
        store.put_rule("r1", Rule(kind="pin", item_id="i1", position=1))
        assert store.rules() == (1, [("r1", Rule(kind="pin", item_id="i1", position=1))])
        # the erasure script over the parked index, both streams, the ledger and user keys
        store.append_holdout([("e1", b"v", "i1", user_pseudonym("u1"))])
        assert store.erase_users(["u1", "u2"], ["er-1"]) == 1
        assert store.get_user("u1") is None and store.erasure_done_at("er-1") is not None
    finally:
        assert store.delete_namespace() > 0
        store.client.close()
