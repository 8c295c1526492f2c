"""A/B variants: the stable split, the settings format and the recommendation-id encoding."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freshrec.settings import load_settings, settings_env
from freshrec.variants import (
    BUCKETS,
    DEFAULT_VARIANT,
    Variant,
    VariantSplit,
    bucket_of,
    feedback_by_variant,
    model_key,
    split_model_key,
)
from operators import model_of

NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
KNOBS = st.fixed_dictionaries(
    {"weight": st.floats(0.01, 1000)},
    optional={
        "evidence_half": st.floats(0.01, 1000),
        "covisit_weight": st.floats(0, 10),
        "trending_share": st.floats(0, 1),
        "max_per_category": st.integers(1, 100),
    },
)
VARIANTS_ENV = "FRESHREC_VARIANTS"
GOLDEN_BUCKETS = [7475, 2925, 6432]
"""Buckets of "u1", "alice" and "": changing the hash reshuffles every running experiment."""


def split_of(config: str) -> VariantSplit:
    return VariantSplit(load_settings(environ={VARIANTS_ENV: config}).variants)


def test_the_split_matches_the_weights_on_100k_random_ids() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    split = split_of('{"a": {"weight": 50}, "b": {"weight": 30}, "c": {"weight": 20}}')
    counts = {"a": 0, "b": 0, "c": 0}
    n = 100_000
    for _ in range(n):
        counts[split.assign(f"user-{rng.getrandbits(64):x}")[0]] += 1
    for name, weight in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        # 5 standard deviations of a binomial share at n = 100k is below 0.008.
        assert abs(counts[name] / n - weight) < 0.008, (seed, counts)


def test_the_split_is_the_same_in_another_process() -> None:
    """Never Python's salted hash(): a fresh interpreter (another PYTHONHASHSEED) agrees."""
    ids = [f"u{n}" for n in range(200)]
    code = (
        "from freshrec.variants import bucket_of; import sys; "
        "print(' '.join(str(bucket_of(u)) for u in sys.argv[1:]))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, *ids],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
        cwd=Path(__file__).parent.parent,
    ).stdout.split()
    assert [int(b) for b in other] == [bucket_of(u) for u in ids]
    assert [bucket_of(u) for u in ("u1", "alice", "")] == GOLDEN_BUCKETS


@given(st.text(max_size=128), st.lists(st.integers(1, 100), min_size=1, max_size=6))
def test_a_user_keeps_their_variant(user_id: str, weights: list[int]) -> None:
    variants = {f"v{i}": Variant(weight=w) for i, w in enumerate(weights)}
    first = VariantSplit(variants).assign(user_id)
    assert VariantSplit(dict(variants)).assign(user_id) == first
    assert 0 <= bucket_of(user_id) < BUCKETS
    assert first[0] in variants


@given(st.dictionaries(NAMES, KNOBS, min_size=1, max_size=5))
def test_the_format_round_trips_through_the_environment(config: dict[str, dict]) -> None:
    settings = load_settings(environ={VARIANTS_ENV: json.dumps(config)})
    assert list(settings.variants) == list(config)
    for name, knobs in config.items():
        assert settings.variants[name] == Variant(**knobs)
    # What a child process (worker, API) is given reproduces the same split.
    assert load_settings(environ=settings_env(settings)).variants == settings.variants


def test_no_variants_means_everyone_in_default_with_unchanged_ids() -> None:
    split = split_of("")
    assert split.assign("anyone") == (DEFAULT_VARIANT, Variant(weight=1.0))
    assert model_key("isgd", DEFAULT_VARIANT) == "isgd"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"a": {"weight": 0}}', "variant 'a': Expected `float` > 0.0 - at `$.weight`"),
        ('{"b": {"weight": -5}}', "variant 'b': Expected `float` > 0.0 - at `$.weight`"),
        ('{"a": {}}', "variant 'a': Object missing required field `weight`"),
        ('{"a": {"weight": 1, "covis": 2}}', "variant 'a': Object contains unknown field `covis`"),
        ('{"a": {"weight": 1, "trending_share": 2}}', "<= 1.0 - at `$.trending_share`"),
        ('{"a": {"weight": "x"}}', "variant 'a': Expected `float`, got `str` - at `$.weight`"),
        ('{"a": {"weight": 1}, "a": {"weight": 2}}', "variant 'a' is defined twice"),
        ('{"a.b": {"weight": 1}}', "variant name 'a.b' must be 1-32 characters"),
        ('{"x~y": {"weight": 1}}', "variant name 'x~y' must be 1-32 characters"),
        ("control:50", "FRESHREC_VARIANTS is not JSON"),
        ('[{"weight": 1}]', "FRESHREC_VARIANTS must be a JSON object"),
    ],
)
def test_bad_variants_are_rejected_at_start_up(config: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_settings(environ={VARIANTS_ENV: config})


@given(st.from_regex(r"[a-z0-9]{1,16}", fullmatch=True), NAMES, st.uuids())
def test_the_variant_survives_the_feedback_model_key(model: str, variant: str, uid) -> None:
    rec_id = f"{model_key(model, variant)}.{uid.hex}"
    assert split_model_key(model_of(rec_id)) == (model, variant)


def test_feedback_rows_per_variant() -> None:
    rows = feedback_by_variant({"isgd~b": (10, 1, 0), "isgd": (20, 5, 2), "v7~a": (0, 0, 0)})
    assert [(r["model"], r["variant"], r["ctr"], r["conversion"]) for r in rows] == [
        ("isgd", "default", 0.25, 0.4),
        ("isgd", "b", 0.1, 0.0),
        ("v7", "a", None, None),
    ]


def test_variants_given_in_code_are_checked_too() -> None:
    with pytest.raises(ValueError, match="variant name 'a.b' must be"):
        load_settings(environ={}, variants={"a.b": Variant(weight=1)})
    with pytest.raises(ValueError, match=re.escape("> 0.0 - at `$.variants[...].weight`")):
        load_settings(environ={}, variants={"a": {"weight": 0}})
