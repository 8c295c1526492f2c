"""``GET /v1/users/{user_id}/recommendations``: a user's top-K, fresh with every click."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import HeaderParameter, PathParameter, QueryParameter

from operators.enrich import context_from_request, segment_key
from serving.recommender import Filters, Recommender, RequestContext
from serving.schemas import Recommendations

ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$(?!\n)"
UserIdParam = Annotated[
    str,
    PathParameter(
        description="The shop's user id (printable, 1-128 characters)",
        min_length=1,
        max_length=128,
        pattern=ID_PATTERN,
    ),
]
CategoryList = Annotated[
    list[Annotated[str, QueryParameter(max_length=128, pattern=ID_PATTERN)]] | None,
    QueryParameter(max_items=50, description="Only these categories (repeat the parameter)"),
]
ExcludedCategoryList = Annotated[
    list[Annotated[str, QueryParameter(max_length=128, pattern=ID_PATTERN)]] | None,
    QueryParameter(max_items=50, description="Never these categories"),
]
Price = Annotated[
    float | None,
    QueryParameter(
        ge=0,
        le=1e15,
        description="Price bound from the catalogue, included (items without price are left "
        "out when a bound is given)",
    ),
]


def build_filters(
    exclude: str = "none",
    category: list[str] | None = None,
    exclude_category: list[str] | None = None,
    available_only: bool = True,
    max_per_category: int | None = None,
    min_price: float | None = None,
    max_price: float | None = None,
) -> Filters:
    """The request's filters; contradictory ones (min_price > max_price) are a 400."""
    try:
        return Filters(
            exclude=exclude,
            categories=frozenset(category or ()),
            exclude_categories=frozenset(exclude_category or ()),
            available_only=available_only,
            max_per_category=max_per_category,
            min_price=min_price,
            max_price=max_price,
        )
    except ValueError as exc:
        raise ClientException(str(exc)) from exc


ShortText = Annotated[str | None, QueryParameter(max_length=256, pattern=ID_PATTERN)]


class RecommendationsController(Controller):
    """Personalised recommendations."""

    path = "/v1/users"
    tags = ["recommendations"]

    @get(
        "/{user_id:str}/recommendations",
        summary="Top-K items for a user",
        description=(
            "Scores the user's fresh vector against every item, blends in popularity while "
            "the user has few events and co-visitation with what they just viewed, applies "
            "the filters (availability, categories, price range) and the shop's rules "
            "(`/v1/rules`: boosts, buries, pins) to every candidate and returns the top K, each "
            "with its reason; a share of the positions (`FRESHREC_NEW_ITEM_SHARE`) goes to "
            "catalogue items without events yet in the user's recent categories (\"new in "
            '<category>"). Unknown users get what is popular in their context (device, '
            "country, time of day)."
        ),
        sync_to_thread=False,
    )
    def recommendations(
        self,
        user_id: UserIdParam,
        recommender: NamedDependency[Recommender],
        k: Annotated[int, QueryParameter(ge=1, le=100, description="How many items")] = 10,
        exclude: Annotated[
            Literal["seen", "purchased", "none"],
            QueryParameter(description="Leave out items the user interacted with / bought"),
        ] = "seen",
        category: CategoryList = None,
        exclude_category: ExcludedCategoryList = None,
        available_only: Annotated[
            bool, QueryParameter(description="Leave out items the catalogue marks unavailable")
        ] = True,
        max_per_category: Annotated[
            int | None,
            QueryParameter(ge=1, le=100, description="Diversity: at most M per category"),
        ] = None,
        min_price: Price = None,
        max_price: Price = None,
        device: ShortText = None,
        country: Annotated[
            str | None, QueryParameter(max_length=2, description="ISO 3166-1 alpha-2")
        ] = None,
        region: ShortText = None,
        page: Annotated[str | None, QueryParameter(max_length=2048)] = None,
        user_agent: Annotated[
            str | None, HeaderParameter(name="User-Agent", max_length=2048)
        ] = None,
    ) -> Recommendations:
        filters = build_filters(
            exclude, category, exclude_category, available_only, max_per_category,
            min_price, max_price,
        )  # fmt: skip

        def context() -> RequestContext:
            ctx = context_from_request(user_agent, device, country, region, datetime.now(UTC))
            return RequestContext(segment_key(ctx), ctx.country)

        return recommender.recommend(user_id, k, filters, context)
