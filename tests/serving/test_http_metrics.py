"""The API's request metrics: counted by route template and by the status the client got."""

from __future__ import annotations

from litestar import Litestar, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from freshrec import metrics
from serving.http_metrics import APP_NAME, http_metrics_middleware


@get("/things/{thing_id:str}/recommendations", sync_to_thread=False)
def things(thing_id: FromPath[str]) -> dict[str, str]:
    if thing_id == "missing":
        raise NotFoundException("no such thing")
    if thing_id == "broken":
        raise RuntimeError("bug")
    return {"thing": thing_id}


@get("/metrics-like", sync_to_thread=False)
def scraped() -> str:
    return "x"


ROUTE = "/things/{thing_id}/recommendations"  # the template, as alerts match it


def count(status: int, path: str = ROUTE, name: str = "freshrec_http_requests_total") -> float:
    labels = {"method": "GET", "path": path, "status_code": str(status), "app_name": APP_NAME}
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_counted_by_route_and_status() -> None:
    app = Litestar(
        [things, scraped], middleware=[http_metrics_middleware(exclude=("/metrics-like",))]
    )
    before = {s: count(s) for s in (200, 404, 500)}
    errors_before = count(500, name="freshrec_http_requests_error_total")
    timed_before = count(200, name="freshrec_http_request_duration_seconds_count")
    recent_before = metrics.total(metrics.REQUESTS_SERVED)
    excluded_before = count(200, "/metrics-like")
    with TestClient(app=app) as client:
        assert [client.get(f"/things/{t}/recommendations").status_code for t in "abc"] == [200] * 3
        assert client.get("/things/missing/recommendations").status_code == 404
        assert client.get("/things/broken/recommendations").status_code == 500
        assert client.get("/metrics-like").status_code == 200
    assert count(200) - before[200] == 3
    assert count(404) - before[404] == 1
    assert count(500) - before[500] == 1
    assert count(500, name="freshrec_http_requests_error_total") - errors_before == 1
    assert count(200, name="freshrec_http_request_duration_seconds_count") - timed_before == 3
    assert metrics.total(metrics.REQUESTS_SERVED) - recent_before == 5
    assert count(200, "/metrics-like") == excluded_before
