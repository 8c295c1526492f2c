"""A/B variants end to end: answers tagged by variant, their feedback counted apart.

Worker and API run as real processes (the variants reach them through ``FRESHREC_VARIANTS``);
impressions and clicks on each variant's answers go through ``POST /v1/events``, the broker
and the flow's feedback windows in Redis, and come back as one CTR row per variant from
``GET /v1/monitoring``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from freshrec.processes import running_pipeline
from freshrec.variants import Variant
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

VARIANTS = {"control": Variant(weight=50), "bold": Variant(weight=50, covisit_weight=0.9)}
IMPRESSIONS = 10
CLICKS = {"control": 4, "bold": 1}


def _feedback(user_id: str, rec_id: str, type_: str, n: int) -> dict[str, object]:
    return {
        "event_id": f"{type_}-{uuid.uuid4().hex}",
        "user_id": user_id,
        "item_id": f"item-{n}",
        "type": type_,
        "ts": datetime.now(UTC).isoformat(),
        "recommendation_id": rec_id,
    }


def test_clicks_on_two_variants_are_separate_ctr_rows(make_settings, tmp_path: Path) -> None:
    settings = make_settings(variants=VARIANTS)
    with running_pipeline(settings, tmp_path) as pipe, httpx.Client(base_url=pipe.api_url) as api:
        answers: dict[str, tuple[str, str]] = {}  # variant -> (user, recommendation id)
        n = 0
        while len(answers) < len(VARIANTS):
            user = f"ab-user-{n}"
            body = api.get(f"/v1/users/{user}/recommendations").json()
            answers.setdefault(body["variant"], (user, body["recommendation_id"]))
            n += 1
        assert set(answers) == set(VARIANTS)
        assert answers["bold"][1].startswith("isgd~bold.")

        events = []
        for variant, (user, rec_id) in answers.items():
            events += [_feedback(user, rec_id, "rec_impression", i) for i in range(IMPRESSIONS)]
            events += [_feedback(user, rec_id, "rec_click", i) for i in range(CLICKS[variant])]
        accepted = api.post("/v1/events", json=events)
        assert accepted.status_code == 202 and accepted.json()["accepted"] == len(events)

        def rows() -> dict[str, dict[str, object]] | None:
            got = {r["variant"]: r for r in api.get("/v1/monitoring").json()["variants"]}
            counted = sum(int(r["impressions"]) + int(r["clicks"]) for r in got.values())
            return got if counted == len(events) else None

        by_variant = wait_until(rows, timeout_s=30, interval_s=0.2)
        assert isinstance(by_variant, dict)
        for variant, row in by_variant.items():
            assert row["model"] == "isgd"
            assert row["impressions"] == IMPRESSIONS
            assert row["ctr"] == CLICKS[variant] / IMPRESSIONS
        windows = api.get("/v1/monitoring").json()["feedback"]
        assert {w["variant"] for w in windows} == set(VARIANTS)
