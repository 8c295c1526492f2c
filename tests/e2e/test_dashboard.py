"""The live dashboard in real headless Chromium while a replay runs on the real stack.

Worker and API run as processes; Taobao events are replayed through the API in the
background while recommendations are requested and clicked; the page must draw every chart
from live data (each chart's SVG reports how many points it drew).
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from freshrec.processes import running_pipeline
from freshrec.replay import iter_dataset_events, send_to_api

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def shop_traffic(api_url: str, events: list, stop: threading.Event) -> None:
    """Replay the log, and meanwhile ask for recommendations and click some of them."""
    send_to_api(events[:2000], api_url, progress=False)
    users = list(dict.fromkeys(e.user_id for e in events[:2000]))
    with httpx.Client(base_url=api_url, timeout=5) as client:
        n = 0
        rest = events[2000:]
        while not stop.is_set():
            batch, rest = rest[:100], rest[100:]
            if batch:
                send_to_api(batch, api_url, progress=False)
            user = users[n % len(users)]
            recs = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
            now = datetime.now(UTC).isoformat()
            feedback = [
                {
                    "event_id": f"imp-{uuid.uuid4().hex}",
                    "user_id": user,
                    "item_id": it["item_id"],
                    "type": "rec_impression",
                    "ts": now,
                    "recommendation_id": recs["recommendation_id"],
                }
                for it in recs["items"]
            ]
            if recs["items"] and n % 3 == 0:
                feedback.append(
                    {
                        "event_id": f"clk-{uuid.uuid4().hex}",
                        "user_id": user,
                        "item_id": recs["items"][0]["item_id"],
                        "type": "rec_click",
                        "ts": now,
                        "recommendation_id": recs["recommendation_id"],
                    }
                )
            if feedback:
                client.post("/v1/events", json=feedback)
            n += 1
            time.sleep(0.05)


def test_dashboard_fills_with_live_data(make_settings, tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (./dev test installs it)"
    settings = make_settings()
    events = list(iter_dataset_events("taobao", limit=6000))
    stop = threading.Event()
    with running_pipeline(settings, tmp_path) as pipe:
        traffic = threading.Thread(target=shop_traffic, args=(pipe.api_url, events, stop))
        traffic.start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(pipe.api_url + "/dashboard")
                # Per-second series need a few seconds; feedback comes in 5-minute windows.
                minimum = {"events": 3, "lag": 3, "freshness": 3, "latency": 3, "ctr": 1}
                for chart, points in minimum.items():
                    page.wait_for_function(
                        f"() => Number(document.querySelector('[data-chart=\"{chart}\"] svg')"
                        f".dataset.points || 0) >= {points}",
                        timeout=60_000,
                    )
                polylines = page.locator("svg polyline").count()
                status = page.locator("#status").inner_text()
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                browser.close()
        finally:
            stop.set()
            traffic.join(30)
    assert polylines >= 5
    assert status.startswith("updated"), status
