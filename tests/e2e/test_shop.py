"""The storefront and the browser SDK in real headless Chromium on the real stack.

Worker and API run as processes over a replayed Taobao history and the demo catalogue; a
shopper opens ``/shop`` (anonymous: the SDK makes their id), views three products, and the
"Recommended for you" panel must change and explain itself by one of them.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from playwright.sync_api import sync_playwright

from benchmarks.served_model import AppliedWatch
from freshrec.bulk_import import import_catalogue
from freshrec.datasets import load_taobao
from freshrec.demo import demo_catalogue
from freshrec.events import Event, decode_event
from freshrec.processes import running_pipeline
from freshrec.replay import iter_events, send_to_api
from serving.shop import SDK_JS
from state.store import RedisStore
from tests.conftest import wait_until
from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_FLAGS

pytestmark = pytest.mark.integration

HISTORY = 6000


def test_viewing_three_products_changes_the_panel_and_names_one(
    make_settings, tmp_path: Path
) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (./dev test installs it)"
    settings = make_settings()
    history = load_taobao().head(HISTORY)
    catalogue = demo_catalogue(history)
    catalogue.write_parquet(tmp_path / "catalogue.parquet")
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    assert import_catalogue(tmp_path / "catalogue.parquet", store, progress=False).imported == 24
    with running_pipeline(settings, tmp_path) as pipe:
        # The shop's history ends now, as a live shop's would: co-visits decay in event time,
        # so against the shopper's own (seen) clicks, lists from 2017 would weigh nothing and
        # the panel could name none of the viewed products.
        past = list(iter_events(history, id_prefix="taobao-", event_time="ends_now"))
        send_to_api(past, pipe.api_url, progress=False)
        # It is applied before the shopper clicks: the worker applies events of different
        # users in no fixed order, and the model the clicks meet (the items' factors and
        # co-visitation lists) depends on it.
        applied = AppliedWatch()
        applied.sent(past)
        applied.wait(store)
        with httpx.Client(base_url=pipe.api_url) as api:
            wait_until(lambda: api.get("/health").json()["items_in_index"] > 0, 60)
        errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(pipe.api_url + "/shop")
            page.wait_for_function("document.querySelectorAll('.tile').length === 24")
            page.wait_for_selector("#recs .fr-rec")
            before = page.locator("#recs").inner_text()
            user_id = page.evaluate("fr.userId")
            titles = []
            for tile in page.locator(".tile").all()[:3]:
                titles.append(tile.locator(".name").inner_text())
                tile.click()
                time.sleep(0.3)  # three views in a row, as a shopper would click
            reasons = [f"because you viewed {title}" for title in titles]
            page.wait_for_function(
                """([before, reasons]) => {
                    const panel = document.querySelector('#recs').innerText;
                    return panel !== before && reasons.some(r => panel.includes(r));
                }""",
                arg=[before, reasons],
                timeout=30_000,
            )
            after = page.locator("#recs").inner_text()
            page.wait_for_function("localStorage.getItem('freshrec.queue') === '[]'")
            page.screenshot(path=str(tmp_path / "shop.png"))
            browser.close()
        with httpx.Client(base_url=pipe.api_url) as api:
            user = api.get(f"/v1/users/{user_id}/recommendations", params={"k": 6}).json()
    assert errors == []
    assert after != before
    assert any(reason in after for reason in reasons)
    assert user_id.startswith("anon-")
    # The viewed products are the user's own now: seen items are not recommended back.
    recommended = {item["item_id"] for item in user["items"]}
    viewed = set(catalogue["item_id"].head(3).to_list())
    assert recommended and not recommended & viewed
    store.delete_namespace()


def test_sdk_is_small() -> None:
    # The SDK ships to every shop page; keep it dependency-free and a few KB.
    assert len(gzip.compress(SDK_JS, 9)) < 4096


def read_events(settings, expected: int) -> list[Event]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "sdk"})
    consumer.assign([TopicPartition(settings.events_topic, p, OFFSET_BEGINNING) for p in range(4)])
    found: list[Event] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < expected and time.monotonic() < deadline:
            found += [
                decode_event(m.value())
                for m in consumer.consume(500, timeout=0.5)
                if m.error() is None
            ]
    finally:
        consumer.close()
    return found


def test_the_sdk_retries_with_the_same_ids_beacons_on_leave_and_keeps_its_id(
    make_settings, tmp_path: Path
) -> None:
    """Against the real API (no worker needed): the events must land on the topic."""
    settings = make_settings()
    with running_pipeline(settings, tmp_path) as pipe:
        posted: list[list[dict]] = []
        refusals = [1]

        def flaky_ingest(route) -> None:  # the first POST meets an overloaded API
            posted.append(json.loads(route.request.post_data or "[]"))
            if refusals:
                refusals.pop()
                route.fulfill(status=503, headers={"Retry-After": "0.2"}, body="{}")
            else:
                route.continue_()

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            context = browser.new_context()
            page = context.new_page()
            page.goto(pipe.api_url + "/shop")
            page.route("**/v1/events", flaky_ingest)
            page.evaluate("() => { fr.view('sku-1'); fr.addToCart('sku-1'); fr.flush(); }")
            page.wait_for_function("localStorage.getItem('freshrec.queue') === '[]'")
            first_id = page.evaluate("fr.userId")
            page.unroute("**/v1/events")
            # A backlog over the browsers' 64 KiB keepalive limit goes out in several batches.
            page.evaluate("() => { for (let i = 0; i < 300; i++) fr.view('bulk-' + i); }")
            page.wait_for_function("localStorage.getItem('freshrec.queue') === '[]'")
            # Leaving the page: what is still queued goes out with sendBeacon.
            page.evaluate("() => { clearInterval(fr.timer); fr.purchase('sku-1'); }")
            page.goto("about:blank")
            # Read before another page could send the stored queue: only the beacon did.
            events = read_events(settings, 303)
            again = context.new_page()
            again.goto(pipe.api_url + "/shop")
            second_id = again.evaluate("fr.userId")
            browser.close()
    assert len(posted) >= 2 and posted[0] == posted[1]  # the retry carried the same ids
    assert [e["type"] for e in posted[0]] == ["view", "add_to_cart"]
    assert first_id == second_id and first_id.startswith("anon-")
    mine = sorted((e.type, e.item_id) for e in events if e.user_id == first_id)
    bulk = [("view", f"bulk-{n}") for n in range(300)]
    assert mine == sorted(
        [("add_to_cart", "sku-1"), ("purchase", "sku-1"), ("view", "sku-1"), *bulk]
    )
    first = {e.event_id for e in events if e.item_id == "sku-1" and e.type != "purchase"}
    assert first == {e["event_id"] for e in posted[0]}
    assert all(e.context and e.context.page.endswith("/shop") for e in events)
