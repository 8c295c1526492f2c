"""``GET /v1/users/{user_id}/recommendations``: a user's top-K, fresh with every click."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter

from freshrec.events import Id
from serving.recommender import Recommender
from serving.schemas import Recommendations

UserIdParam = Annotated[
    str,
    Parameter(
        description="The shop's user id (printable, 1-128 characters)",
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]+$(?!\n)",
    ),
]
_ = Id  # the same constraints as the event schema's ids


class RecommendationsController(Controller):
    """Personalised recommendations."""

    path = "/v1/users"
    tags = ["recommendations"]

    @get(
        "/{user_id:str}/recommendations",
        summary="Top-K items for a user",
        sync_to_thread=False,
    )
    def recommendations(
        self,
        user_id: UserIdParam,
        recommender: Recommender,
        k: Annotated[int, Parameter(ge=1, le=100, description="How many items")] = 10,
    ) -> Recommendations:
        return recommender.recommend(user_id, k)
