"""A/B variants through the HTTP API, over state the real flow wrote to real Redis.

Two apps serve one namespace: one without variants (everyone in ``default``) and one that
splits users between ``control``, ``diverse`` (at most one item per category) and ``crowd``
(popularity outweighs the user's own vector, no co-visitation boost).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import msgspec
import pytest
from litestar.testing import TestClient

from freshrec.events import Event
from freshrec.replay import iter_dataset_events
from freshrec.variants import Variant, VariantSplit
from serving.app import create_app
from state.store import RedisStore
from tests.conftest import run_flow_on, unique_settings

pytestmark = pytest.mark.integration

VARIANTS = {
    "control": Variant(weight=40),
    "diverse": Variant(weight=40, max_per_category=1),
    "crowd": Variant(weight=20, evidence_half=1e9, covisit_weight=0),
}


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while client.get("/health").json()["items_in_index"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # one more refresh for the popular lists


@pytest.fixture(scope="module")
def clients(stack, tmp_path_factory) -> Iterator[tuple[list[Event], TestClient, TestClient]]:
    settings = unique_settings(stack, tmp_path_factory.mktemp("variants"))
    events = list(iter_dataset_events("taobao", limit=3000))
    run_flow_on(settings, events, 500)
    split = msgspec.structs.replace(settings, variants=VARIANTS)
    with TestClient(app=create_app(settings)) as plain, TestClient(app=create_app(split)) as ab:
        _ready(plain)
        _ready(ab)
        yield events, plain, ab
    RedisStore.from_url(
        settings.redis_url, settings.redis_prefix, settings.factors
    ).delete_namespace()


def test_without_variants_everyone_is_in_default(clients) -> None:
    events, plain, _ = clients
    body = plain.get(f"/v1/users/{events[0].user_id}/recommendations").json()
    assert body["variant"] == "default" and body["recommendation_id"].startswith("isgd.")


def test_users_are_answered_in_their_variant_and_its_knob_applies(clients) -> None:
    events, plain, ab = clients
    category = {e.item_id: e.category_id for e in events}
    split = VariantSplit(VARIANTS)
    users = list(dict.fromkeys(e.user_id for e in events))
    control = next(u for u in users if split.assign(u)[0] == "control")
    body = ab.get(f"/v1/users/{control}/recommendations", params={"k": 20}).json()
    assert body["variant"] == "control"
    assert body["recommendation_id"].startswith("isgd~control.")
    assert (
        body["items"]
        == plain.get(f"/v1/users/{control}/recommendations", params={"k": 20}).json()["items"]
    )

    def repeats(items: list[dict[str, object]]) -> int:
        counts = Counter(category.get(str(it["item_id"])) for it in items)
        return max(counts.values())

    # A "diverse" user whose default answer repeats a category: their variant's cap applies.
    checked = 0
    for user in users:
        if split.assign(user)[0] != "diverse":
            continue
        default = plain.get(f"/v1/users/{user}/recommendations", params={"k": 20}).json()
        if default["model_version"] == 0 or repeats(default["items"]) == 1:
            continue
        body = ab.get(f"/v1/users/{user}/recommendations", params={"k": 20}).json()
        assert body["variant"] == "diverse"
        assert body["recommendation_id"].startswith("isgd~diverse.")
        assert len(body["items"]) == 20 and repeats(body["items"]) == 1
        # The request's own cap still wins over the variant's.
        asked = ab.get(
            f"/v1/users/{user}/recommendations", params={"k": 20, "max_per_category": 20}
        ).json()
        assert asked["items"] == default["items"]
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_a_blend_knob_changes_the_ranking(clients) -> None:
    events, plain, ab = clients
    split = VariantSplit(VARIANTS)
    users = [u for u in dict.fromkeys(e.user_id for e in events) if split.assign(u)[0] == "crowd"]
    changed = 0
    for user in users[:20]:
        default = plain.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
        if default["model_version"] == 0:
            continue
        body = ab.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
        assert body["variant"] == "crowd"
        changed += body["items"] != default["items"]
    assert changed >= 5
