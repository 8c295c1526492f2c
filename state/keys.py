"""Every Redis key freshrec uses, in one place.

Ids are always the *last* component of a key, so no id (whatever it contains) can produce
another entity's key: ``fr:u:a:b`` is user ``a:b`` and nothing else. Ids reaching this module
were validated by the event schema (printable, <= 128 chars).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one deployment namespace (``prefix``)."""

    prefix: str

    def user(self, user_id: str) -> str:
        """String: the user's record (vector, window, seen items), msgpack."""
        return f"{self.prefix}:u:{user_id}"

    @property
    def item_factors(self) -> str:
        """Hash item_id -> float32 factor blob."""
        return f"{self.prefix}:if"

    @property
    def item_changes(self) -> str:
        """Sorted set item_id -> change sequence number of its last factor write."""
        return f"{self.prefix}:if:chg"

    @property
    def item_change_seq(self) -> str:
        """Counter: sequence number of the last item factor write (the item matrix version)."""
        return f"{self.prefix}:if:seq"

    @property
    def item_versions(self) -> str:
        """Hash item_id -> update count of the stored factors (for idempotent writes)."""
        return f"{self.prefix}:if:ver"

    @property
    def popularity(self) -> str:
        """Sorted set item_id -> log2 of the forward-decayed popularity."""
        return f"{self.prefix}:pop"

    @property
    def model_meta(self) -> str:
        """Hash: factor dimension and other facts serving must agree on."""
        return f"{self.prefix}:model"

    def pattern(self) -> str:
        """Glob matching every key of this namespace (for cleanup)."""
        return f"{self.prefix}:*"
