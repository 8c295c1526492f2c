"""A/B variants: which ranking configuration a user is served, and how feedback finds it again.

``FRESHREC_VARIANTS`` (``Settings.variants``) maps variant names to a traffic weight and the
ranking knobs that differ from serving's defaults. A user's variant is a stable hash of the
user id (blake2b, modulo :data:`BUCKETS`) against the cumulative weights, so every process,
restart and replica agrees. The variant travels in the recommendation id's model part
(``isgd~covis_heavy.<uuid>``): the feedback windows, keyed by that part (``model_of``), then
count impressions, clicks and conversions per model and variant with no new stream field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

BUCKETS = 10_000
"""Granularity of the split: weights are honoured to 0.01% of traffic."""
DEFAULT_VARIANT = "default"
"""Everyone's variant when none is configured (recommendation ids then carry no variant)."""
VARIANT_SEPARATOR = "~"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
"""Variant names: no ``.`` (it ends the model part of an id) nor ``~`` (it starts the name)."""
_SALT = b"freshrec-variants"


class Variant(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One variant's share of users and its ranking knobs (None: serving's default)."""

    weight: Annotated[float, msgspec.Meta(gt=0)]
    """Relative share of users (weights need not sum to 100)."""
    evidence_half: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Interactions with items (not impressions) after which a user's own vector weighs as
    much as popularity (default 5)."""
    covisit_weight: Annotated[float, msgspec.Meta(ge=0)] | None = None
    """Boost of items co-visited with what the user just viewed (default 0.3; 0: none)."""
    trending_share: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    """Share of a new user's answer given to trending items (default 0.2; 0: none)."""
    max_per_category: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Diversity cap applied when the request sets none (default: no cap)."""


DEFAULT = Variant(weight=1.0)


def check_variants(variants: Mapping[str, Variant]) -> None:
    """Raise ``ValueError`` naming the first bad variant name."""
    for name in variants:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"variant name {name!r} must be 1-32 characters of letters, digits, _ or -"
            )


def parse_variants(env_name: str, text: str) -> dict[str, Variant]:
    """The variants of ``FRESHREC_VARIANTS`` (a JSON object), every error naming its variant."""
    if not text.strip():
        return {}

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in pairs]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"{env_name}: variant {dup!r} is defined twice")
        return dict(pairs)

    try:
        value = json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{env_name} is not JSON ({exc}): expected an object like "
            '{"control": {"weight": 50}, "covis_heavy": {"weight": 50, "covisit_weight": 0.9}}'
        ) from exc
    if not isinstance(value, dict):
        raise ValueError(f"{env_name} must be a JSON object of variant name -> settings")
    variants: dict[str, Variant] = {}
    for name, knobs in value.items():
        try:
            variants[name] = msgspec.convert(knobs, Variant)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{env_name}: variant {name!r}: {exc}") from exc
    return variants


def bucket_of(user_id: str) -> int:
    """The user's bucket in ``[0, BUCKETS)``: the same in every process and release."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8, key=_SALT).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class VariantSplit:
    """Assigns users to the configured variants (everyone to ``default`` when none is)."""

    def __init__(self, variants: Mapping[str, Variant]) -> None:
        check_variants(variants)
        self.variants = dict(variants)
        total = sum(v.weight for v in variants.values())
        self._bounds: list[tuple[int, str]] = []
        cumulative = 0.0
        for name, variant in variants.items():
            cumulative += variant.weight
            self._bounds.append((round(BUCKETS * cumulative / total), name))

    def assign(self, user_id: str) -> tuple[str, Variant]:
        """The user's variant name and knobs."""
        if not self._bounds:
            return DEFAULT_VARIANT, DEFAULT
        bucket = bucket_of(user_id)
        for bound, name in self._bounds:
            if bucket < bound:
                return name, self.variants[name]
        name = self._bounds[-1][1]  # not reached: the last bound is BUCKETS
        return name, self.variants[name]


def model_key(model: str, variant: str) -> str:
    """The model part of a recommendation id: ``model`` or ``model~variant``."""
    return model if variant == DEFAULT_VARIANT else f"{model}{VARIANT_SEPARATOR}{variant}"


def split_model_key(key: str) -> tuple[str, str]:
    """``(model, variant)`` of a feedback model key (inverse of :func:`model_key`)."""
    model, sep, variant = key.partition(VARIANT_SEPARATOR)
    return (model, variant) if sep and variant else (model, DEFAULT_VARIANT)


def feedback_by_variant(counts: Mapping[str, tuple[int, int, int]]) -> list[dict[str, Any]]:
    """CTR and conversion per (model, variant) from impressions, clicks, conversions per key.

    ``counts`` is keyed by the feedback model key (the recommendation id's model part);
    conversion is per click, as in the feedback windows.
    """
    rows: list[dict[str, Any]] = []
    for key in sorted(counts):
        impressions, clicks, conversions = counts[key]
        model, variant = split_model_key(key)
        rows.append(
            {
                "model": model,
                "variant": variant,
                "impressions": impressions,
                "clicks": clicks,
                "conversions": conversions,
                "ctr": clicks / impressions if impressions else None,
                "conversion": conversions / clicks if clicks else None,
            }
        )
    return rows
