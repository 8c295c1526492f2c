"""Loaders that turn the real interaction logs under ``shared/data`` into one normalised frame.

Every loader returns the same columns (:data:`INTERACTION_SCHEMA`) in time order with a
deterministic tie-break, so a replay (:mod:`freshrec.replay`), a benchmark or a prequential
evaluation sees the same sequence of events on every run. ``seq`` is the event's line number in
its source file and, with the dataset name, becomes a stable event id (dedup relies on it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import polars as pl

DATA_DIR_ENV: Final = "FRESHREC_DATA_DIR"
#: ``../shared/data`` seen from the project root, where the datasets live (read-only).
DEFAULT_DATA_DIR: Final = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Columns and types of every loader's output. ``ts`` is ``Int64`` unix seconds, except for
#: DIGINETICA where a millisecond offset makes it ``Float64``.
INTERACTION_SCHEMA: Final[Mapping[str, type[pl.DataType]]] = {
    "user_id": pl.String,
    "item_id": pl.String,
    "category_id": pl.String,
    "behavior": pl.String,
    "ts": pl.Int64,
    "rating": pl.Float64,
    "session_id": pl.String,
    "seq": pl.Int64,
}
BEHAVIORS: Final[tuple[str, ...]] = ("view", "add_to_cart", "purchase", "favourite")

TAOBAO_BEHAVIORS: Final[Mapping[str, str]] = {
    "pv": "view",
    "cart": "add_to_cart",
    "buy": "purchase",
    "fav": "favourite",
}
#: The official UserBehavior window, 2017-11-25 00:00 to 2017-12-04 00:00 China time (UTC+8),
#: as unix seconds; the original file holds a few events stamped outside it.
TAOBAO_WINDOW_START_S: Final = 1_511_539_200
TAOBAO_WINDOW_END_S: Final = 1_512_316_800

#: DIGINETICA purchases get ``seq = offset + line number`` so their ids and tie-break rank do
#: not depend on which view log (the head here or the full 1.2 M-row file) sits beside them.
DIGINETICA_PURCHASE_SEQ_OFFSET: Final = 1_000_000_000
_DAY_MS: Final = 86_400_000

DATASET_ALIASES: Final[Mapping[str, str]] = {
    "taobao": "taobao",
    "movielens": "movielens",
    "movielens-100k": "movielens",
    "diginetica": "diginetica",
}

_TAOBAO_CSV_SCHEMA: Final = {
    "user_id": pl.String,
    "item_id": pl.String,
    "category_id": pl.String,
    "behavior": pl.String,
    "ts": pl.Int64,
}
_MOVIELENS_RATINGS_SCHEMA: Final = {
    "user": pl.Int64,
    "item": pl.Int64,
    "rating": pl.Float64,
    "ts": pl.Int64,
}
_MOVIELENS_USERS_SCHEMA: Final = {
    "user_id": pl.String,
    "age": pl.Int64,
    "gender": pl.String,
    "occupation": pl.String,
    "zip": pl.String,
}


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Directory holding the datasets: ``$FRESHREC_DATA_DIR`` if set, else ``../shared/data``."""
    env = os.environ if environ is None else environ
    override = env.get(DATA_DIR_ENV)
    return Path(override) if override else DEFAULT_DATA_DIR


#: The data directory as resolved at import; loaders re-resolve it at each call.
DATA_DIR: Final = data_dir()


def _finish(frame: pl.LazyFrame, sort_by: list[str], limit: int | None) -> pl.DataFrame:
    """Sort by keys that are unique together, keep the normalised columns and the first rows."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    ordered = frame.sort(sort_by).select(list(INTERACTION_SCHEMA))
    if limit is not None:
        ordered = ordered.head(limit)
    return ordered.collect()


# --- Taobao UserBehavior -------------------------------------------------------------------


def _read_taobao(path: Path) -> pl.LazyFrame:
    """Read a UserBehavior-layout CSV, mapping behaviours and numbering lines from 1."""
    raw = pl.read_csv(
        path, has_header=False, schema=_TAOBAO_CSV_SCHEMA, quote_char=None
    ).with_row_index("seq", offset=1)
    incomplete = raw.filter(pl.any_horizontal(pl.all().is_null()))
    if incomplete.height:
        # A head cut from the 100M-row original ends mid-line (the raw file here does): that
        # last line is dropped; a hole anywhere else means the file is not what we think.
        if incomplete["seq"].to_list() != [raw.height]:
            lines = incomplete["seq"].head(5).to_list()
            raise ValueError(f"{path}: {incomplete.height} incomplete rows, e.g. lines {lines}")
        raw = raw.head(raw.height - 1)
    unknown = raw.filter(~pl.col("behavior").is_in(list(TAOBAO_BEHAVIORS)))
    if unknown.height:
        first = unknown.row(0, named=True)
        raise ValueError(
            f"{path}: {unknown.height} rows with an unknown behaviour, e.g. "
            f"{first['behavior']!r} at line {first['seq']}"
        )
    return raw.lazy().with_columns(
        pl.col("behavior").replace_strict(TAOBAO_BEHAVIORS, return_dtype=pl.String),
        pl.col("seq").cast(pl.Int64),
        pl.lit(None, dtype=pl.Float64).alias("rating"),
        pl.lit(None, dtype=pl.String).alias("session_id"),
    )


def load_taobao_csv(path: str | Path, *, limit: int | None = None) -> pl.DataFrame:
    """Load any log in the UserBehavior layout (``user,item,category,pv|cart|fav|buy,ts``).

    Sorted by ``(ts, line number)``: lines are per-user chronological, so file order is the
    natural tie-break. Nothing is filtered except a truncated final line.
    """
    return _finish(_read_taobao(Path(path)), ["ts", "seq"], limit)


def load_taobao(
    path: str | Path | None = None,
    limit: int | None = None,
    drop_out_of_window: bool = True,
) -> pl.DataFrame:
    """Load Taobao UserBehavior (default: the clean 84,287-row head), in time order.

    ``drop_out_of_window`` removes events stamped outside the dataset's official nine days
    (35 in the clean head, all before 2017-11-24 16:00 UTC); ``limit`` keeps the first rows
    after filtering and sorting.
    """
    csv_path = (
        data_dir() / "taobao-userbehavior" / "UserBehavior_head_clean.csv"
        if path is None
        else Path(path)
    )
    frame = _read_taobao(csv_path)
    if drop_out_of_window:
        frame = frame.filter(
            pl.col("ts").is_between(TAOBAO_WINDOW_START_S, TAOBAO_WINDOW_END_S, closed="left")
        )
    return _finish(frame, ["ts", "seq"], limit)


# --- MovieLens 100K ------------------------------------------------------------------------


def _movielens_dir(path: str | Path | None) -> Path:
    if path is None:
        return data_dir() / "movielens-100k" / "ml-100k"
    given = Path(path)
    return given.parent if given.is_file() else given


def _movielens_genres(folder: Path) -> pl.LazyFrame | None:
    """``item`` → name of its first genre flag (``unknown`` counts as none), from u.item."""
    item_file, genre_file = folder / "u.item", folder / "u.genre"
    if not (item_file.exists() and genre_file.exists()):
        return None
    genre_names = [
        line.split("|")[0]
        for line in genre_file.read_text(encoding="latin-1").splitlines()
        if line.strip()
    ]
    flag_columns = [f"genre_{index}" for index in range(len(genre_names))]
    items = pl.read_csv(
        item_file,
        separator="|",
        has_header=False,
        # Titles are Latin-1 and unused here; only the id and the genre flags are kept.
        encoding="utf8-lossy",
        quote_char=None,
        new_columns=["item", "title", "release", "video_release", "url", *flag_columns],
        schema_overrides={"item": pl.Int64, **dict.fromkeys(flag_columns, pl.Int8)},
    )
    first_genre = pl.coalesce(
        [
            pl.when(pl.col(column) == 1).then(pl.lit(name))
            for column, name in zip(flag_columns, genre_names, strict=True)
            if name != "unknown"
        ]
    )
    return items.lazy().select("item", first_genre.alias("category_id"))


def load_movielens(
    path: str | Path | None = None,
    min_rating: float | None = None,
    limit: int | None = None,
) -> pl.DataFrame:
    """Load MovieLens 100K ratings as ``view`` events carrying their ``rating``.

    ``path`` is the ``ml-100k`` folder (or its ``u.data``). Sorted by ``(ts, user, item)``
    with numeric ids: half the rows share a timestamp, and a (user, item) pair occurs once.
    ``category_id`` is the item's first genre from u.item; ``min_rating`` keeps ratings >= it.
    """
    folder = _movielens_dir(path)
    ratings_file = Path(path) if path is not None and Path(path).is_file() else folder / "u.data"
    ratings = pl.scan_csv(
        ratings_file, separator="\t", has_header=False, schema=_MOVIELENS_RATINGS_SCHEMA
    ).with_row_index("seq", offset=1)
    if min_rating is not None:
        ratings = ratings.filter(pl.col("rating") >= min_rating)
    genres = _movielens_genres(folder)
    if genres is None:
        ratings = ratings.with_columns(pl.lit(None, dtype=pl.String).alias("category_id"))
    else:
        ratings = ratings.join(genres, on="item", how="left")
    frame = ratings.with_columns(
        pl.col("user").cast(pl.String).alias("user_id"),
        pl.col("item").cast(pl.String).alias("item_id"),
        pl.lit("view").alias("behavior"),
        pl.lit(None, dtype=pl.String).alias("session_id"),
        pl.col("seq").cast(pl.Int64),
    )
    return _finish(frame, ["ts", "user", "item"], limit)


def movielens_users(path: str | Path | None = None) -> pl.DataFrame:
    """The u.user profile table (user_id, age, gender, occupation, zip), for cold start."""
    return pl.read_csv(
        _movielens_dir(path) / "u.user",
        separator="|",
        has_header=False,
        schema=_MOVIELENS_USERS_SCHEMA,
        quote_char=None,
    )


# --- DIGINETICA ----------------------------------------------------------------------------


def _read_diginetica_log(path: Path, behavior: str, seq_offset: int) -> pl.LazyFrame:
    """One `;`-separated DIGINETICA log with its header normalised to snake_case."""
    raw = pl.read_csv(path, separator=";", null_values="NA", infer_schema=False)
    # The SR-GNN sample renamed ``sessionId`` to ``session_id`` etc.; accept both spellings.
    raw = raw.rename({name: name.replace("Id", "_id").lower() for name in raw.columns})
    day_s = pl.col("eventdate").str.to_date("%Y-%m-%d").cast(pl.Int64) * 86_400
    # ``eventdate`` is the event's own day but ``timeframe`` counts from the session's first
    # query, which can be days earlier (session 90838: 1.8e6 ms on 04-02, 2.1e8 ms on 04-04;
    # up to 153 days in purchases). Added raw, 2,443 purchases would land up to five months
    # after the log ends, so the offset is capped to stay within the recorded day.
    offset_s = pl.min_horizontal(pl.col("timeframe").cast(pl.Int64), _DAY_MS - 1) / 1000
    return (
        raw.lazy()
        .with_row_index("seq", offset=1)
        .select(
            pl.coalesce("user_id", pl.lit("s") + pl.col("session_id")).alias("user_id"),
            "item_id",
            pl.lit(behavior).alias("behavior"),
            (day_s + offset_s).alias("ts"),
            pl.lit(None, dtype=pl.Float64).alias("rating"),
            "session_id",
            (pl.col("seq").cast(pl.Int64) + seq_offset).alias("seq"),
        )
    )


def load_diginetica(path: str | Path | None = None, limit: int | None = None) -> pl.DataFrame:
    """Load DIGINETICA item views and purchases as one log, sorted by ``(ts, seq)``.

    ``ts`` = ``eventdate`` (UTC midnight) + ``timeframe`` ms, capped below one day so every
    event stays on its recorded day (only the day is reliable across sessions). Anonymous
    users become ``"s" + session_id``; ``category_id`` comes from product-categories.csv.
    Views keep their line number as ``seq``, purchases are offset by
    :data:`DIGINETICA_PURCHASE_SEQ_OFFSET`, so on a tie a view precedes a purchase.
    ``path`` is the folder; a full ``train-item-views.csv`` there is preferred to the sample.
    """
    folder = data_dir() / "diginetica" if path is None else Path(path)
    views_file = folder / "train-item-views.csv"
    if not views_file.exists():
        views_file = folder / "sample_train-item-views.csv"
    events = pl.concat(
        [
            _read_diginetica_log(views_file, "view", 0),
            _read_diginetica_log(
                folder / "train-purchases.csv", "purchase", DIGINETICA_PURCHASE_SEQ_OFFSET
            ),
        ]
    )
    categories = pl.scan_csv(
        folder / "product-categories.csv",
        separator=";",
        schema={"item_id": pl.String, "category_id": pl.String},
        skip_rows=1,
        has_header=False,
    )
    return _finish(events.join(categories, on="item_id", how="left"), ["ts", "seq"], limit)


# --- by name -------------------------------------------------------------------------------


def canonical_dataset_name(name: str) -> str:
    """``taobao`` | ``movielens`` | ``diginetica`` for a name or alias (``movielens-100k``)."""
    try:
        return DATASET_ALIASES[name.lower()]
    except KeyError:
        known = ", ".join(sorted(DATASET_ALIASES))
        raise ValueError(f"unknown dataset {name!r}; expected one of {known}") from None


def load_dataset(name: str, limit: int | None = None) -> pl.DataFrame:
    """Load a dataset by name with each loader's defaults."""
    canonical = canonical_dataset_name(name)
    if canonical == "taobao":
        return load_taobao(limit=limit)
    if canonical == "movielens":
        return load_movielens(limit=limit)
    return load_diginetica(limit=limit)
