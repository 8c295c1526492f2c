"""The settings' derived sizes."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from freshrec.settings import LISTING_OVERFLOW_ODDS, listed_per_shard, load_settings


def overflow_odds(head: int, shards: int, listed: int) -> Fraction:
    """Exactly: shards × P(Binomial(head, 1/shards) > listed)."""
    tail = sum(math.comb(head, k) * (shards - 1) ** (head - k) for k in range(listed + 1, head + 1))
    return shards * Fraction(tail, shards**head)


@given(head=st.integers(0, 300), shards=st.integers(1, 400))
def test_each_shard_lists_the_fewest_items_that_keep_the_head_whole(head: int, shards: int) -> None:
    listed = listed_per_shard(head, shards)
    odds = Fraction(LISTING_OVERFLOW_ODDS)
    assert 0 <= listed <= head
    assert overflow_odds(head, shards, listed) < odds
    if listed > 0:  # one fewer would not do
        assert overflow_odds(head, shards, listed - 1) >= odds


def test_the_default_head_over_the_default_shards() -> None:
    settings = load_settings(environ={})
    assert (settings.popular_list_size, settings.item_shards) == (1000, 64)
    # 53 per shard (the old rule, 8x the fair share, listed 128).
    assert settings.popular_listed_per_shard == 53
