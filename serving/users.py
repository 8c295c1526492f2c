"""Admin actions on shoppers: erase one, merge an anonymous id into a logged-in one.

Both travel the events topic, keyed by user like the shopper's own events, so they land in
the user's partition after everything the shopper did before them and the dataflow applies
them in that order; a replay from an older checkpoint, or a parked state restored later,
meets them again.

- ``DELETE /v1/users/{id}`` produces a tombstone (``freshrec.events.Erase``), then deletes the
  user's keys at once (the dataflow deletes them again when it applies the tombstone, after
  dropping the user's state). ``GET /v1/erasures/{erasure_id}`` says when it was applied.
- ``POST /v1/users/{id}/merge`` needs two users' state, which may live on two workers, so no
  step of the flow ever needs both: the API reads the anonymous id's record, produces its
  recent items and purchases as the user's events (keyed by the user; ids derived from the
  pair and the item, so a retried merge is deduplicated), then the anonymous id's tombstone.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import JSONBody, PathParameter

from freshrec.events import Erase, Event, EventType, encode_erase, encode_event
from freshrec.settings import Settings
from serving.producer import EventProducer, OutRecord
from serving.recommendations import ID_PATTERN, UserIdParam
from serving.recommender import Recommender
from serving.schemas import ErasureAccepted, ErasureStatus, MergeAccepted, MergeRequest
from state.records import UserRecord
from state.store import RedisStore

ErasureIdParam = Annotated[
    str,
    PathParameter(
        description="The id `DELETE /v1/users/{id}` answered with",
        min_length=1,
        max_length=128,
        pattern=ID_PATTERN,
    ),
]


def merge_events(target: str, source: str, record: UserRecord, now: datetime) -> list[Event]:
    """The source's record as the target's events, oldest first, stamped ``now``.

    Its purchases (those no longer among its recent items first), then its recent items,
    each a purchase if it was bought, else a view. The ids depend on the pair, the item and
    the type only: a merge sent twice is one merge to the target's dedup.
    """
    bought = set(record.purchased)
    recent = list(reversed(record.recent))
    items = [i for i in reversed(record.purchased) if i not in set(recent)] + recent
    events = []
    for item in items:
        kind: EventType = "purchase" if item in bought else "view"
        digest = hashlib.blake2b(
            "\0".join((source, target, item, kind)).encode(), digest_size=16
        ).hexdigest()
        events.append(
            Event(event_id=f"merge-{digest}", user_id=target, item_id=item, type=kind, ts=now)
        )
    return events


@dataclass(frozen=True, slots=True)
class UserAdmin:
    """Erasure and merge, as the admin endpoints run them."""

    settings: Settings
    store: RedisStore
    """A store with an admin's patience (the erasure script scans two streams)."""
    recommender: Recommender
    producer: Callable[[], EventProducer]

    def _tombstone(self, user_id: str) -> tuple[str, OutRecord]:
        erasure_id = uuid.uuid4().hex
        erase = Erase(type="erase", user_id=user_id, erasure_id=erasure_id, ts=datetime.now(UTC))
        return erasure_id, OutRecord(
            self.settings.events_topic, user_id.encode(), encode_erase(erase)
        )

    async def _delete_now(self, user_id: str) -> None:
        """What serving reads goes at once; the dataflow confirms when it applies the tombstone."""
        await asyncio.to_thread(self.store.erase_users, [user_id])
        self.recommender.forget(user_id)

    async def erase(self, user_id: str) -> ErasureAccepted:
        """Put the user's tombstone on the broker, then delete their keys."""
        erasure_id, record = self._tombstone(user_id)
        await self.producer().produce([record])
        await self._delete_now(user_id)
        return ErasureAccepted(user_id, erasure_id)

    async def merge(self, target: str, source: str) -> MergeAccepted:
        """The source's items as the target's events, then the source's tombstone."""
        if source == target:
            raise ClientException(f"Cannot merge user `{target}` into itself")
        record = await asyncio.to_thread(self.store.get_user, source)
        if record is None:
            raise NotFoundException(
                f"No record of user `{source}` (never seen, expired, erased or already merged)"
            )
        events = merge_events(target, source, record, datetime.now(UTC))
        topic = self.settings.events_topic
        erasure_id, tombstone = self._tombstone(source)
        records = [OutRecord(topic, target.encode(), encode_event(e)) for e in events]
        await self.producer().produce([*records, tombstone])
        await self._delete_now(source)
        return MergeAccepted(target, source, len(events), erasure_id)

    def status(self, erasure_id: str) -> ErasureStatus:
        """Whether the dataflow has applied the erasure."""
        done_at = self.store.erasure_done_at(erasure_id)
        if done_at is None:
            return ErasureStatus(erasure_id, "pending")
        return ErasureStatus(erasure_id, "done", done_at)


class UsersAdminController(Controller):
    """Erasure and merge of shoppers (admin: header X-API-Key; mounted behind the guard)."""

    path = "/v1/users"
    tags = ["users"]

    @delete(
        "/{user_id:str}",
        status_code=202,
        summary="Erase a shopper (admin; header X-API-Key)",
        description=(
            "Deletes what serving reads of the user at once and puts a tombstone on the "
            "events topic: the dataflow drops the user's state and deletes their keys again, "
            "and keeps them out of the event archive. Events sent after it start a new user. "
            "Their share of aggregates (item factors, co-visitation, popularity) stays. 202: "
            "the tombstone is on the broker; `GET /v1/erasures/{erasure_id}` says when the "
            "dataflow applied it. 503 + Retry-After: retry (an erasure is idempotent)."
        ),
    )
    async def erase(
        self, user_id: UserIdParam, users: NamedDependency[UserAdmin]
    ) -> ErasureAccepted:
        return await users.erase(user_id)

    @post(
        "/{user_id:str}/merge",
        status_code=202,
        summary="Merge an anonymous id into a user (admin; header X-API-Key)",
        description=(
            "On login: the anonymous id's recent items and purchases become the user's events "
            "(produced keyed by the user), then the anonymous id is erased. 404: no record of "
            "the anonymous id. 202: both are on the broker."
        ),
    )
    async def merge(
        self,
        user_id: UserIdParam,
        data: JSONBody[MergeRequest],
        users: NamedDependency[UserAdmin],
    ) -> MergeAccepted:
        return await users.merge(user_id, data.source_user_id)


class ErasuresController(Controller):
    """Whether an erasure has been applied (admin)."""

    path = "/v1/erasures"
    tags = ["users"]

    @get(
        "/{erasure_id:str}",
        summary="Status of an erasure (admin; header X-API-Key)",
        sync_to_thread=True,
    )
    def status(
        self, erasure_id: ErasureIdParam, users: NamedDependency[UserAdmin]
    ) -> ErasureStatus:
        return users.status(erasure_id)
