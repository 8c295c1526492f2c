"""The seeded negative sampler shared by live HR@10 and model validation."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from operators.model_validation import sampled_negatives

CATALOGUE = [f"item-{n}" for n in range(1000)]


@given(key=st.text(max_size=30), count=st.integers(1, 200), size=st.integers(1, 400))
def test_draws_distinct_items_of_the_catalogue_without_the_excluded_one(
    key: str, count: int, size: int
) -> None:
    catalogue = CATALOGUE[:size]
    exclude = catalogue[len(key) % size]
    picks = sampled_negatives(key, catalogue, count, exclude)
    assert len(picks) == len(set(picks))
    assert set(picks) <= set(catalogue) - {exclude}
    # count draws, one of which may have been the excluded item
    assert min(count, size) - 1 <= len(picks) <= min(count, size)


def test_same_key_same_draw_other_key_other_draw() -> None:
    first = sampled_negatives("event-1", CATALOGUE, 99, "item-0")
    assert first == sampled_negatives("event-1", CATALOGUE, 99, "item-0")
    assert first != sampled_negatives("event-2", CATALOGUE, 99, "item-0")


def test_every_item_is_drawn_about_equally_often() -> None:
    counts = Counter(
        item for n in range(2000) for item in sampled_negatives(f"e{n}", CATALOGUE, 50, "")
    )
    # 100,000 draws over 1,000 items: 100 expected each; a biased sampler (e.g. one that
    # favoured low indices) leaves items at 0 or far above.
    assert len(counts) == len(CATALOGUE)
    assert min(counts.values()) > 50 and max(counts.values()) < 160
