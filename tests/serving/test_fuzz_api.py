"""Fuzzing every endpoint of the API from its own OpenAPI schema (schemathesis + hypothesis).

The app is ``create_app(settings)`` on the session's real broker and Redis, over a namespace
the real flow filled from the Taobao log (so known users, items and popular lists exist). Each
operation gets schema-conforming (positive) and schema-violating (negative) cases, admin
endpoints with and without the key. Every answer must be below 500, every 4xx must say why
(a non-empty ``detail``) and no body may leak a trace or an internal address.

Deterministic: hypothesis is derandomized; ``FUZZ_API_SEED`` is printed and changes the data.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import pytest
import schemathesis
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSource, run_main
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from litestar import Litestar
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi

from dataflows.personalize import build_flow
from freshrec.events import encode_event
from freshrec.replay import iter_dataset_events
from freshrec.settings import Settings
from serving.app import create_app
from serving.auth import API_KEY_HEADER
from state.store import RedisStore
from tests.conftest import unique_settings

pytestmark = pytest.mark.integration

ADMIN_KEY = "fuzz-admin-key-0123456789"
SEED = int(os.environ.get("FUZZ_API_SEED", "20261129"))
#: Cases per operation, per generation mode and key (about 1 minute for the whole module).
MAX_EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", "100"))
LEAK_MARKERS = ("Traceback", 'File "/', "site-packages", "redis://")


@dataclass
class FuzzedApi:
    settings: Settings
    schema: schemathesis.BaseSchema
    leaks: tuple[str, ...]


@pytest.fixture(scope="module")
def fuzzed_api(stack, tmp_path_factory) -> Iterator[FuzzedApi]:
    settings = unique_settings(
        stack,
        tmp_path_factory.mktemp("fuzz-api"),
        admin_api_key=ADMIN_KEY,
        # The limit would answer most of this burst with 429 before the handlers are reached;
        # the limiter itself is tested in test_rate_limit.py.
        ingest_rate_limit_per_s=0,
    )
    events = list(iter_dataset_events("taobao", limit=2000))
    messages = [
        KafkaSourceMessage(key=None, value=encode_event(e), topic="t", partition=0, offset=n)
        for n, e in enumerate(events)
    ]
    run_main(build_flow(settings, TestingSource(messages, batch_size=500)))
    app: Litestar = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/docs/openapi.json", app)
    # Addresses and ports of the services behind the API: no answer may name them.
    redis_host_port = settings.redis_url.split("//", 1)[1].split("/", 1)[0]
    leaks = (*LEAK_MARKERS, settings.kafka_bootstrap, redis_host_port)
    try:
        yield FuzzedApi(settings, schema, leaks)
    finally:
        schemathesis_asgi.shutdown_lifespans()  # the app's producer and threads, before the broker
        RedisStore.from_url(
            settings.redis_url, settings.redis_prefix, settings.factors
        ).delete_namespace()


def check_answer(api: FuzzedApi, case: schemathesis.Case, response: schemathesis.Response) -> None:
    """The contract every answer keeps, whatever was sent."""
    case.validate_response(response, checks=[not_a_server_error])
    text = response.content.decode("utf-8", errors="replace") if response.content else ""
    for marker in api.leaks:
        assert marker not in text, f"answer leaks {marker!r}: {text[:300]}"
    if 400 <= response.status_code < 500:
        try:
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            pytest.fail(f"{response.status_code} without a JSON body: {text[:300]}")
        assert isinstance(body, dict), body
        assert has_reason(body), f"{response.status_code} without a reason: {body}"


def has_reason(body: dict) -> bool:
    """A non-empty ``detail``, or ingest's 422: every rejected event with its reasons."""
    detail = body.get("detail")
    if isinstance(detail, str) and detail.strip():
        return True
    rejected = body.get("rejected")
    return bool(rejected) and all(
        r["errors"] and all(e["path"] and e["message"].strip() for e in r["errors"])
        for r in rejected
    )


def fuzz_operation(
    api: FuzzedApi,
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    headers: dict[str, str],
) -> Counter[int]:
    """Run ``MAX_EXAMPLES`` cases of one operation; return how many got each status."""
    statuses: Counter[int] = Counter()

    @seed(SEED)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=headers)
        statuses[response.status_code] += 1
        check_answer(api, case, response)

    run()
    return statuses


def operations(api: FuzzedApi) -> list[schemathesis.APIOperation]:
    found = [result.ok() for result in api.schema.get_all_operations()]
    assert len(found) >= 10, [op.label for op in found]
    return found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("with_key", [True, False], ids=["admin-key", "no-key"])
def test_every_endpoint_answers_below_500_with_reasons(
    fuzzed_api: FuzzedApi, mode: GenerationMode, with_key: bool
) -> None:
    headers = {API_KEY_HEADER: ADMIN_KEY} if with_key else {}
    print(f"\nFUZZ_API_SEED={SEED} mode={mode.value} key={with_key} examples={MAX_EXAMPLES}")
    started = time.monotonic()
    failures: list[str] = []
    total = 0
    for operation in operations(fuzzed_api):
        try:
            statuses = fuzz_operation(fuzzed_api, operation, mode, headers)
        except Unsatisfiable:  # nothing to violate: an operation without parameters or body
            print(f"  {operation.label}: no {mode.value} cases exist")
            continue
        except Exception as exc:  # collect every operation's failure, not only the first
            failures.append(f"{operation.label}: {exc}")
            continue
        total += statuses.total()
        print(
            f"  {operation.label}: {statuses.total()} cases, status {dict(sorted(statuses.items()))}"
        )
    print(f"  {total} cases, {len(failures)} failures, {time.monotonic() - started:.1f} s")
    assert not failures, "\n\n".join(failures)


def test_hostile_raw_bodies_answer_4xx_with_reasons(fuzzed_api: FuzzedApi) -> None:
    """Bodies no schema generator writes: broken UTF-8, nesting, NUL, huge, wrong types."""
    from litestar.testing import TestClient

    bodies = [
        b'{"event_id": "a\xed\xa0\x80", "user_id": "u", "item_id": "i", "type": "view"}',
        b'"\xff"',
        b"[" * 100_000,
        b"\x00" * 64,
        b"{" + b'"a":' * 5000 + b"1",
        b'{"event_id": "\\ud800", "user_id": "u"}',
        b"[" + b"1," * 2000 + b"1]",
        b'{"ts": 1e400}',
        b"x" * (fuzzed_api.settings.max_body_bytes + 1),
        b"",
        # Invalid, within the body limit, but over a Kafka producer's 1,000,000-byte record
        # limit: its dead-letter copy must be cut to size, not turn the answer into a 503.
        b'{"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", '
        b'"ts": "2017-11-25T00:00:00Z", "context": {"user_agent": "' + b"u" * 1_040_000 + b'"}}',
    ]
    headers = {API_KEY_HEADER: ADMIN_KEY, "Content-Type": "application/json"}
    with TestClient(app=create_app(fuzzed_api.settings)) as client:
        for body in bodies:
            for method, path in (("POST", "/v1/events"), ("PUT", "/v1/items")):
                response = client.request(method, path, content=body, headers=headers)
                assert 400 <= response.status_code < 500, (path, body[:60], response.text[:300])
                assert has_reason(response.json()), response.text[:300]
                for marker in fuzzed_api.leaks:
                    assert marker not in response.text
