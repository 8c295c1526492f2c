"""Every Redis key freshrec uses, in one place.

Every key starts with the deployment's namespace as a Redis Cluster hash tag, ``{fr}:``:
Redis Cluster hashes only the text between the first ``{`` and ``}``, so all keys of one
deployment share a slot and the multi-key scripts and commands of state/store.py (MSET of
many users, EVAL over the item keys, a script reading neighbour lists) never fail with
CROSSSLOT. Ids are always the *last* component of a key, so no id (whatever it contains) can
produce another entity's key: ``{fr}:u:a:b`` is user ``a:b`` and nothing else. Ids reaching
this module were validated by the event schema (printable, <= 128 chars).

Per-user keys — what an erasure deletes and what expires after ``Settings.user_retention_s``
without a write: the record (:meth:`Keys.user`), the parked state (:meth:`Keys.user_state`),
the user's entry in the parked index (:attr:`Keys.parked_users`) and the index of their
entries in the holdout and alarm streams (:meth:`Keys.user_samples`, keyed by pseudonym), by
which those entries are deleted too; the entries carry the user's pseudonym, never the id.
Everything else is aggregate (items, co-visitation, popularity, feedback counts per model
and segment, monitoring) or names no user (the model versions, the erasure ledger).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def check_namespace(namespace: str) -> None:
    """Raise ValueError unless ``namespace`` can be a hash tag (non-empty, no braces)."""
    if not namespace or "{" in namespace or "}" in namespace:
        raise ValueError(
            f"Redis namespace must be non-empty and free of '{{' and '}}', got {namespace!r}"
        )


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one deployment namespace (``Settings.redis_prefix``)."""

    namespace: str
    prefix: str = field(init=False)
    """What every key starts with: the namespace as a hash tag, ``{fr}``."""

    def __post_init__(self) -> None:
        check_namespace(self.namespace)
        object.__setattr__(self, "prefix", "{" + self.namespace + "}")

    def user(self, user_id: str) -> str:
        """String: the user's record (vector, window, seen items), expiring with the retention.

        msgpack behind an 8-byte version header (the writes compare against it).
        """
        return f"{self.prefix}:u:{user_id}"

    def user_state(self, user_id: str) -> str:
        """String: the dataflow's full state of an idle user, evicted from worker memory."""
        return f"{self.prefix}:us:{user_id}"

    @property
    def parked_users(self) -> str:
        """Sorted set user_id -> unix time its parked state expires (workers load it at start)."""
        return f"{self.prefix}:usidx"

    def user_samples(self, pseudonym: str) -> str:
        """Set: the user's entries in the holdout and alarm streams, keyed by their pseudonym.

        Members ``h <entry id>`` and ``a <entry id>``; the pseudonym is
        ``operators.user_pseudonym``'s. Expires with the retention.
        """
        return f"{self.prefix}:usmp:{pseudonym}"

    @property
    def erasures(self) -> str:
        """Sorted set erasure_id -> unix time the dataflow (last) completed it; no user ids."""
        return f"{self.prefix}:erased"

    @property
    def item_factors(self) -> str:
        """Hash item_id -> float32 factor blob."""
        return f"{self.prefix}:if"

    @property
    def item_changes(self) -> str:
        """Stream: one entry per write batch, id ``<its last seq>-0``, fields first seq and ids."""
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
    def item_categories(self) -> str:
        """Hash item_id -> category_id, as last seen in events."""
        return f"{self.prefix}:icat"

    @property
    def catalogue(self) -> str:
        """Hash item_id -> catalogue entry (msgpack), from ``PUT /v1/items``."""
        return f"{self.prefix}:cat"

    @property
    def catalogue_changes(self) -> str:
        """Sorted set item_id -> sequence number of its last catalogue write."""
        return f"{self.prefix}:cat:chg"

    @property
    def catalogue_seq(self) -> str:
        """Counter: sequence number of the last catalogue write."""
        return f"{self.prefix}:cat:seq"

    @property
    def rules(self) -> str:
        """Hash rule_id -> merchandising rule (msgpack), from ``/v1/rules``."""
        return f"{self.prefix}:rules"

    @property
    def rules_version(self) -> str:
        """Counter: bumped by every rule write; API processes reload the rules when it moves."""
        return f"{self.prefix}:rules:ver"

    @property
    def popularity(self) -> str:
        """Sorted set item_id -> log2 of the forward-decayed popularity."""
        return f"{self.prefix}:pop"

    @property
    def trending(self) -> str:
        """Sorted set item_id -> log2(short-term rate / long-term rate)."""
        return f"{self.prefix}:trend"

    def segment_popularity(self, segment: str) -> str:
        """Sorted set item_id -> log2 decayed popularity within a context segment."""
        return f"{self.prefix}:pop:seg:{segment}"

    def neighbours(self, item_id: str) -> str:
        """String: the item's top co-visited neighbours (versioned msgpack)."""
        return f"{self.prefix}:cov:{item_id}"

    @property
    def neighbour_versions(self) -> str:
        """Hash item_id -> version of its stored neighbour list (the writes compare against it)."""
        return f"{self.prefix}:covver"

    def feedback(self, model: str, segment: str) -> str:
        """Hash window start -> msgpack counts of recommendation feedback."""
        return f"{self.prefix}:fb:{model}|{segment}"

    def monitor(self, source: str) -> str:
        """Stream of per-second monitoring samples of a source (``worker``, ``api``)."""
        return f"{self.prefix}:mon:{source}"

    @property
    def alarms(self) -> str:
        """Stream of drift alarms and recalibrations (per-user ones name a pseudonym, no id).

        A per-user alarm names the user's pseudonym in its detail and its ``user`` field.
        """
        return f"{self.prefix}:alarms"

    @property
    def holdout(self) -> str:
        """Stream of test-then-train samples: user vector before the event, item, time.

        Each carries the user's pseudonym (``user``): an erasure deletes the user's samples by it.
        """
        return f"{self.prefix}:holdout"

    @property
    def model_versions(self) -> str:
        """Hash version id -> model version record (JSON)."""
        return f"{self.prefix}:mv"

    def model_blob(self, version_id: str) -> str:
        """String: a version's item ids and factor matrix (msgpack)."""
        return f"{self.prefix}:mv:blob:{version_id}"

    @property
    def active_model(self) -> str:
        """String: id of the model version serving uses (absent: the live stream)."""
        return f"{self.prefix}:mv:active"

    @property
    def model_meta(self) -> str:
        """Hash: factor dimension and other facts serving must agree on."""
        return f"{self.prefix}:model"

    def pattern(self) -> str:
        """Glob matching every key of this namespace (for cleanup)."""
        return f"{self.prefix}:*"
