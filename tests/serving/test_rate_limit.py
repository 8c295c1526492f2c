"""Ingest is rate-limited per client: the excess gets 429 with a reason, others are unaffected."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from serving.app import create_app
from tests.conftest import unique_settings

pytestmark = pytest.mark.integration


def test_ingest_rate_limit_per_client(stack, tmp_path) -> None:
    settings = unique_settings(stack, tmp_path, ingest_rate_limit_per_s=5)
    with TestClient(app=create_app(settings)) as client:
        statuses = [client.post("/v1/events", content=b"{}").status_code for _ in range(12)]
        assert statuses[:5] == [422] * 5  # validated (and rejected: empty event)
        assert 429 in statuses[5:]
        limited = client.post("/v1/events", content=b"{}")
        assert limited.status_code == 429 and limited.json()["detail"]
        # Only ingest is limited: reads go on.
        assert all(client.get("/health").status_code == 200 for _ in range(20))
