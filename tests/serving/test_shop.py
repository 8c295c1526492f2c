"""The browser side of the API in-process: SDK, storefront, catalogue pages, CORS, beacons.

Real Redis and the session's broker behind ``create_app``; nothing stands in for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from litestar.testing import TestClient

from freshrec.settings import Settings
from serving.app import create_app
from state.records import CatalogueItem
from state.store import RedisStore

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(shop_origins=f"{SHOP}/, https://www.shop.example", sdk_cache_s=60)
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    store.put_catalogue(
        [CatalogueItem(item_id=f"i{n}", category_id="c", title=f"T{n}") for n in range(5)]
    )
    with TestClient(app=create_app(settings)) as test_client:
        yield test_client
    store.delete_namespace()


def test_the_sdk_and_the_storefront_are_served(client: TestClient) -> None:
    sdk = client.get("/sdk.js")
    assert sdk.status_code == 200
    assert sdk.headers["content-type"].startswith("text/javascript")
    assert sdk.headers["cache-control"] == "public, max-age=60"
    assert "sendBeacon" in sdk.text and "global.freshrec = {" in sdk.text
    shop = client.get("/shop")
    assert shop.status_code == 200 and '<script src="sdk.js">' in shop.text


def test_the_catalogue_is_read_a_page_at_a_time_in_write_order(client: TestClient) -> None:
    first = client.get("/v1/catalogue", params={"limit": 3}).json()
    assert [e["item_id"] for e in first["items"]] == ["i0", "i1", "i2"]
    assert first["items"][0] == {"item_id": "i0", "category_id": "c", "title": "T0"}
    assert first["next_offset"] == 3
    rest = client.get("/v1/catalogue", params={"limit": 3, "offset": 3}).json()
    assert [e["item_id"] for e in rest["items"]] == ["i3", "i4"] and rest["next_offset"] is None


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 2**63}, {"limit": "x"}],
)
def test_bad_catalogue_parameters_are_a_400_with_the_reason(
    client: TestClient, params: dict[str, object]
) -> None:
    response = client.get("/v1/catalogue", params=params)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_cors_lets_the_shops_origins_in_and_no_other(client: TestClient) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    allowed = client.options("/v1/events", headers={"Origin": SHOP, **preflight})
    assert allowed.status_code in (200, 204)
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert "POST" in allowed.headers["access-control-allow-methods"]
    other = client.options("/v1/events", headers={"Origin": "https://evil.example", **preflight})
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    read = client.get("/v1/users/u1/recommendations", headers={"Origin": SHOP})
    assert read.headers["access-control-allow-origin"] == SHOP


def test_a_beacon_body_sent_as_text_plain_is_ingested(client: TestClient) -> None:
    # sendBeacon cannot set application/json without a CORS preflight: the SDK sends text.
    event = {
        "event_id": "beacon-1",
        "user_id": "anon-1",
        "item_id": "i1",
        "type": "view",
        "ts": datetime.now(UTC).isoformat(),
        "context": {"user_agent": "Mozilla/5.0", "page": "https://shop.example/p/1"},
    }
    response = client.post(
        "/v1/events",
        content=json.dumps([event]),
        headers={"content-type": "text/plain;charset=UTF-8", "Origin": SHOP},
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1


def test_without_shop_origins_no_cross_origin_reads_are_allowed(
    make_settings: Callable[..., Settings],
) -> None:
    with TestClient(app=create_app(make_settings())) as plain:
        response = plain.get("/sdk.js", headers={"Origin": SHOP})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
