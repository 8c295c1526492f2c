"""Item endpoints: similar items for product pages, and the catalogue (written by admins)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get, put
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import JSONBody, PathParameter, QueryParameter

from serving.recommendations import CategoryList, ExcludedCategoryList, Price, build_filters
from serving.recommender import Recommender
from serving.schemas import CatalogueEntry, CataloguePage, CatalogueResult, SimilarItems
from state.records import CatalogueItem
from state.store import RedisStore

MAX_CATALOGUE_BATCH = 1000
#: Redis indexes are 64-bit: a larger offset would be a 500, not an empty page.
MAX_CATALOGUE_OFFSET = 1_000_000_000

ItemIdParam = Annotated[
    str,
    PathParameter(
        description="The shop's item id (printable, 1-128 characters)",
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]+$(?!\n)",
    ),
]


class ItemsController(Controller):
    """Items: similar items and catalogue."""

    path = "/v1/items"
    tags = ["items"]

    @get(
        "/{item_id:str}/similar",
        summary="Items to show next to a product",
        description="Items viewed in the same sessions (co-visitation), blended with the "
        "item's nearest neighbours in factor space; filters (availability, categories, price "
        "range) and the shop's rules (`/v1/rules`) apply to every candidate before the top K. "
        "Sold-out items are left out unless `available_only=false`.",
        sync_to_thread=False,
    )
    def similar(
        self,
        item_id: ItemIdParam,
        recommender: NamedDependency[Recommender],
        k: Annotated[int, QueryParameter(ge=1, le=100, description="How many items")] = 10,
        category: CategoryList = None,
        exclude_category: ExcludedCategoryList = None,
        available_only: Annotated[
            bool, QueryParameter(description="Leave out items the catalogue marks unavailable")
        ] = True,
        min_price: Price = None,
        max_price: Price = None,
    ) -> SimilarItems:
        filters = build_filters(
            "none", category, exclude_category, available_only, None, min_price, max_price
        )
        return recommender.similar(item_id, k, filters)


class CataloguePagesController(Controller):
    """The catalogue, readable by anyone (storefront tiles); written by ``PUT /v1/items``."""

    path = "/v1/catalogue"
    tags = ["items"]

    @get(
        "/",
        summary="The catalogue, a page at a time",
        description="Entries of `PUT /v1/items` in the order they were written (what a "
        "storefront shows as product tiles).",
        sync_to_thread=False,
    )
    def catalogue(
        self,
        store: NamedDependency[RedisStore],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_CATALOGUE_BATCH)] = 24,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_CATALOGUE_OFFSET)] = 0,
    ) -> CataloguePage:
        page = [
            CatalogueEntry(**msgspec.structs.asdict(e)) for e in store.catalogue_page(offset, limit)
        ]
        return CataloguePage(page, offset + limit if len(page) == limit else None)


class CatalogueController(Controller):
    """The catalogue (admin: header X-API-Key; the app mounts it behind the admin guard)."""

    path = "/v1/items"
    tags = ["items"]

    @put(
        "/",
        summary="Create or replace catalogue entries (admin; header X-API-Key)",
        description="Category, title, price and availability of up to 1,000 items. Items "
        "are recommendable as soon as they have events; `available: false` hides them.",
        sync_to_thread=False,
    )
    def put_items(
        self, data: JSONBody[list[CatalogueEntry]], store: NamedDependency[RedisStore]
    ) -> CatalogueResult:
        if len(data) > MAX_CATALOGUE_BATCH:
            raise ClientException(f"At most {MAX_CATALOGUE_BATCH} items per request")
        entries = [
            CatalogueItem(
                item_id=e.item_id,
                category_id=e.category_id,
                title=e.title,
                price=e.price,
                available=e.available,
                brand=e.brand,
            )
            for e in data
        ]
        return CatalogueResult(store.put_catalogue(entries))
