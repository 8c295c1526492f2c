"""The benchmark's native stage timer: every stage of the flow timed, on real Taobao events."""

from __future__ import annotations

from itertools import islice

import operators
from dataflows.personalize import isgd_params, item_config, user_config
from freshrec.events import encode_event
from freshrec.replay import iter_dataset_events
from freshrec.settings import load_settings

STAGES = {
    "decode + validate",
    "enrichment",
    "user state",
    "item_batches",
    "item model",
    "collect_writes",
}


def _payloads(n: int) -> list[bytes]:
    return [encode_event(e) for e in islice(iter_dataset_events("taobao"), n)]


def test_every_stage_costs_something_on_200_events() -> None:
    settings = load_settings(environ={})
    payloads = _payloads(200)
    costs = operators.stage_costs(
        payloads,
        isgd_params(settings),
        user_config(settings),
        item_config(settings),
        settings.neighbours_per_item,
        repeats=2,
        batch_size=50,
        sample_every=1,
    )
    assert costs["events"] == 200
    assert costs["valid_events"] == 200
    stages = costs["stage_us_per_event"]
    assert set(stages) == STAGES
    assert all(us > 0 for us in stages.values()), stages
    assert costs["detail_us_per_event"]
    assert all(us > 0 for us in costs["detail_us_per_event"].values())


def test_invalid_payloads_are_decoded_and_skipped() -> None:
    settings = load_settings(environ={})
    payloads = [*_payloads(20), b"not json", b'{"event_id": 1}']
    costs = operators.stage_costs(
        payloads,
        isgd_params(settings),
        user_config(settings),
        item_config(settings),
        settings.neighbours_per_item,
        repeats=1,
        sample_every=0,
    )
    assert costs["events"] == 22
    assert costs["valid_events"] == 20
