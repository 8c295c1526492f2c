"""The storefront and the browser SDK in real headless Chromium on the real stack.

Worker and API run as processes over a replayed Taobao history and the demo catalogue; a
shopper opens ``/shop`` (anonymous: the SDK makes their id), views three products, and the
"Recommended for you" panel must change and explain itself by one of them.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from freshrec.bulk_import import import_catalogue
from freshrec.datasets import load_taobao
from freshrec.demo import demo_catalogue
from freshrec.replay import iter_events, send_to_api
from serving.shop import SDK_JS
from state.store import RedisStore
from tests.conftest import running_pipeline, wait_until
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
        send_to_api(iter_events(history, id_prefix="taobao-"), pipe.api_url, progress=False)
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
