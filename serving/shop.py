"""The browser side: the SDK (``/sdk.js``) and the demo storefront (``/shop``) that uses it.

Both are static files read once; the storefront reads the catalogue (``GET /v1/catalogue``) and
recommendations through the SDK like any shop page on another origin would (CORS: the
``shop_origins`` setting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar import Controller, MediaType, Response, get
from litestar.config.cors import CORSConfig
from litestar.di import NamedDependency

from freshrec.settings import Settings

STATIC: Final = Path(__file__).parent / "static"
SDK_JS: Final = (STATIC / "sdk.js").read_bytes()
SHOP_HTML: Final = (STATIC / "shop.html").read_bytes()


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS for the shops' origins (reads and event posts from their pages), or none."""
    origins = settings.shop_origin_list
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["content-type"],
        max_age=600,
    )


class ShopController(Controller):
    """The SDK and the storefront."""

    include_in_schema = False

    @get("/sdk.js", sync_to_thread=False)
    def sdk(self, settings: NamedDependency[Settings]) -> Response[bytes]:
        return Response(
            SDK_JS,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": f"public, max-age={settings.sdk_cache_s}"},
        )

    @get("/shop", media_type=MediaType.HTML, sync_to_thread=False)
    def shop(self) -> Response[bytes]:
        return Response(SHOP_HTML, media_type=MediaType.HTML)
