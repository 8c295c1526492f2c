"""Merchandising rules: ``/v1/rules`` (admin) and their compilation for the native ranker.

Rules live in Redis (``state/keys.py``: a hash and a version counter); every API process's
item index reloads them in the background when the version moves, and the recommender
compiles them per version of the rules and of the items' facts (and again when a rule's
window opens or closes) into one native ``Merchandising`` that every request borrows: no
Redis round trip and no Python loop over candidates per request.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import JSONBody, PathParameter

from freshrec.settings import Settings
from operators import Merchandising
from serving.item_index import Catalogue, ItemMatrix, RuleSet
from serving.schemas import RuleEntry, RuleList
from state.records import Rule
from state.store import RedisStore

RuleId = Annotated[
    str, PathParameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$(?!\n)")
]


def new_rule_id() -> str:
    """A fresh id that sorts by creation time (pins at the same position: lower id first)."""
    return f"r{time.time_ns() // 1_000_000:012x}{secrets.token_hex(3)}"


def _entry(rule_id: str, rule: Rule) -> RuleEntry:
    return RuleEntry(rule_id=rule_id, **msgspec.structs.asdict(rule))


class RulesController(Controller):
    """Merchandising rules (admin: header X-API-Key; the app mounts it behind the admin guard)."""

    path = "/v1/rules"
    tags = ["rules"]

    @get("/", summary="List the rules", sync_to_thread=False)
    def list_rules(self, store: NamedDependency[RedisStore]) -> RuleList:
        version, rules = store.rules()
        return RuleList(version, [_entry(i, r) for i, r in rules])

    @post(
        "/",
        summary="Create a rule",
        description="Boost or bury an item, a category or a brand by a factor, or pin an item "
        "to a position, optionally from `starts_at` and/or until `ends_at`. Every API process "
        "applies it within `FRESHREC_ITEM_REFRESH_MS`.",
        sync_to_thread=False,
    )
    def create_rule(
        self,
        data: JSONBody[Rule],
        store: NamedDependency[RedisStore],
        settings: NamedDependency[Settings],
    ) -> RuleEntry:
        if store.rule_count() >= settings.max_rules:
            raise ClientException(f"At most {settings.max_rules} rules: delete some first")
        rule_id = new_rule_id()
        store.put_rule(rule_id, data)
        return _entry(rule_id, data)

    @get("/{rule_id:str}", summary="One rule", sync_to_thread=False)
    def get_rule(self, rule_id: RuleId, store: NamedDependency[RedisStore]) -> RuleEntry:
        rule = store.rule(rule_id)
        if rule is None:
            raise NotFoundException(f"No rule {rule_id}")
        return _entry(rule_id, rule)

    @put("/{rule_id:str}", summary="Create or replace a rule by id", sync_to_thread=False)
    def put_rule(
        self,
        rule_id: RuleId,
        data: JSONBody[Rule],
        store: NamedDependency[RedisStore],
        settings: NamedDependency[Settings],
    ) -> RuleEntry:
        if store.rule(rule_id) is None and store.rule_count() >= settings.max_rules:
            raise ClientException(f"At most {settings.max_rules} rules: delete some first")
        store.put_rule(rule_id, data)
        return _entry(rule_id, data)

    @delete("/{rule_id:str}", summary="Delete a rule", sync_to_thread=False)
    def delete_rule(self, rule_id: RuleId, store: NamedDependency[RedisStore]) -> None:
        if not store.delete_rule(rule_id):
            raise NotFoundException(f"No rule {rule_id}")


def build_merchandising(
    matrix: ItemMatrix, catalogue: Catalogue, rules: RuleSet, now_s: float
) -> Merchandising | None:
    """The native plan of ``rules`` at ``now_s`` for the items of ``matrix``.

    None when there is nothing to apply (no rules, no new items). A rule naming an item,
    category or brand the index does not know yet is left out until the items' facts change
    (which compiles again).
    """
    new = matrix.new_items
    if not rules.rules and not new.item_ids:
        return None
    size = matrix.size

    def slot(item_id: str) -> int | None:
        row = matrix.rows.get(item_id)
        if row is not None:
            return row
        j = new.index.get(item_id)
        return None if j is None else size + j

    weights: list[tuple[str, int, float, float, float]] = []
    pins: list[tuple[int, int, float, float]] = []
    for _, rule in rules.rules:
        starts, ends = rule.window_s
        target: tuple[str, int | None]
        if rule.item_id is not None:
            target = ("item", slot(rule.item_id))
        elif rule.category_id is not None:
            target = ("category", catalogue.category_code.get(rule.category_id))
        else:
            target = ("brand", catalogue.brand_code.get(rule.brand or ""))
        kind, value = target
        if value is None:
            continue
        if rule.kind == "pin":
            pins.append((value, rule.position or 1, starts, ends))
        else:
            weights.append((kind, value, rule.factor or 1.0, starts, ends))
    return Merchandising(
        size,
        matrix.category_codes,
        matrix.brand_codes,
        new.category_codes,
        new.brand_codes,
        new.prices,
        new.unavailable,
        weights,
        pins,
        now_s,
    )
