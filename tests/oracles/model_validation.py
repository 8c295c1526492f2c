"""The seeded negative sampler of ``operators/model_validation.py`` before it moved to the native core.

Only ``sampled_negatives`` moved; the rest of model validation is still Python in the product.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def sampled_negatives(key: str, catalogue: Sequence[str], count: int, exclude: str) -> list[str]:
    """Up to ``count`` distinct items drawn with a seed derived from ``key``, minus ``exclude``.

    The same key always draws the same items, so two models (or the live flow and the
    lifecycle) rank a held-out interaction against the same candidates. The draw is read
    straight off a SHAKE-128 stream of the key (64-bit words modulo the catalogue size: a
    bias below 2^-40 for any real catalogue): ~5 µs, where seeding a numpy generator and
    mapping its picks cost ~100 µs per event in the live flow's sampled HR@10.
    """
    n = len(catalogue)
    if count >= n:
        return [item for item in catalogue if item != exclude]
    picks: dict[int, None] = {}
    stream = hashlib.shake_128(key.encode())
    length = 8 * (count + count // 4 + 4)
    while len(picks) < count:
        # Longer prefixes of the same stream extend the earlier draws (collisions are rare).
        words = np.frombuffer(stream.digest(length), dtype="<u8")
        for index in (words % n).tolist():
            picks[index] = None
            if len(picks) == count:
                break
        length *= 2
    return [item for index in picks if (item := catalogue[index]) != exclude]
