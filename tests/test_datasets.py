"""Loaders on the real logs under shared/data: counts from the dataset READMEs, order, ties."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from freshrec import datasets
from freshrec.datasets import (
    BEHAVIORS,
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    INTERACTION_SCHEMA,
    TAOBAO_WINDOW_START_S,
    data_dir,
    load_dataset,
    load_diginetica,
    load_movielens,
    load_taobao,
    load_taobao_csv,
    movielens_users,
)

TAOBAO_DIR = DEFAULT_DATA_DIR / "taobao-userbehavior"


def assert_normalised(frame: pl.DataFrame, ts_dtype: type[pl.DataType] = pl.Int64) -> None:
    expected = {**INTERACTION_SCHEMA, "ts": ts_dtype}
    assert frame.schema == pl.Schema(expected)
    assert set(frame["behavior"].unique()) <= set(BEHAVIORS)
    assert frame["seq"].is_unique().all()
    assert frame["user_id"].null_count() == frame["item_id"].null_count() == 0


def assert_time_ordered(frame: pl.DataFrame, *tie_break: str) -> None:
    assert frame["ts"].diff().drop_nulls().min() >= 0  # type: ignore[operator]
    assert frame.equals(frame.sort("ts", *tie_break))


# --- locations ----------------------------------------------------------------------------


def test_data_dir_defaults_to_shared_data_beside_the_project() -> None:
    assert data_dir({}) == DEFAULT_DATA_DIR
    assert (DEFAULT_DATA_DIR / "README.md").exists()
    assert data_dir({DATA_DIR_ENV: "/elsewhere"}) == Path("/elsewhere")


def test_loaders_read_from_the_directory_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "taobao-userbehavior").mkdir()
    (tmp_path / "taobao-userbehavior" / "UserBehavior_head_clean.csv").write_text(
        "7,70,700,buy,1511600000\n7,71,700,pv,1511500000\n"
    )
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    frame = load_taobao(drop_out_of_window=False)
    assert frame["item_id"].to_list() == ["71", "70"]
    assert load_taobao().height == 1


# --- Taobao --------------------------------------------------------------------------------


def test_taobao_clean_head_has_every_row_and_maps_behaviours() -> None:
    frame = load_taobao(drop_out_of_window=False)
    assert_normalised(frame)
    assert frame.height == 84_287
    assert frame["user_id"].n_unique() == 814
    assert frame["item_id"].n_unique() == 55_233
    assert frame["category_id"].n_unique() == 2_911
    counts = dict(frame["behavior"].value_counts().iter_rows())
    assert counts == {"view": 75_693, "add_to_cart": 4_494, "favourite": 2_351, "purchase": 1_749}
    assert frame["rating"].null_count() == frame["session_id"].null_count() == frame.height


def test_taobao_drops_the_35_events_before_the_official_window() -> None:
    everything = load_taobao(drop_out_of_window=False)
    in_window = load_taobao()
    assert everything.height - in_window.height == 35
    assert (everything["ts"] < TAOBAO_WINDOW_START_S).sum() == 35
    assert in_window["ts"].min() >= TAOBAO_WINDOW_START_S  # type: ignore[operator]
    start = datetime.fromtimestamp(TAOBAO_WINDOW_START_S, UTC)
    assert start == datetime(2017, 11, 24, 16, tzinfo=UTC)


def test_taobao_is_in_time_order_with_file_order_breaking_ties() -> None:
    frame = load_taobao()
    assert_time_ordered(frame, "seq")
    # Ties are common (11,578 rows share a timestamp): the order among them must be fixed.
    tied = frame.filter(pl.col("ts").is_duplicated())
    assert tied.height > 10_000
    assert tied.equals(tied.sort("ts", "seq"))


def test_taobao_line_numbers_point_at_the_source_line() -> None:
    lines = (TAOBAO_DIR / "UserBehavior_head_clean.csv").read_text().splitlines()
    frame = load_taobao(limit=50)
    for row in frame.iter_rows(named=True):
        user, item, category, _, ts = lines[row["seq"] - 1].split(",")
        assert (user, item, category, int(ts)) == (
            row["user_id"],
            row["item_id"],
            row["category_id"],
            row["ts"],
        )


def test_taobao_loads_the_same_frame_twice_and_limits_after_sorting() -> None:
    first, second = load_taobao(), load_taobao()
    assert first.equals(second)
    assert load_taobao(limit=1_000).equals(first.head(1_000))
    assert load_taobao(limit=0).height == 0
    with pytest.raises(ValueError, match="limit"):
        load_taobao(limit=-1)


def test_taobao_full_load_is_fast() -> None:
    load_taobao()  # warm the file cache and polars' thread pool
    started = time.perf_counter()
    load_taobao(drop_out_of_window=False)
    assert time.perf_counter() - started < 1.0


def test_taobao_csv_drops_only_a_truncated_final_line() -> None:
    raw = load_taobao_csv(TAOBAO_DIR / "UserBehavior_head_raw.csv")
    assert raw.height == 84_475  # the 84,476th line has no timestamp
    assert_time_ordered(raw, "seq")
    clean = load_taobao_csv(TAOBAO_DIR / "UserBehavior_head_clean.csv", limit=5)
    assert clean.equals(load_taobao(drop_out_of_window=False, limit=5))


def test_taobao_csv_refuses_holes_and_unknown_behaviours(tmp_path: Path) -> None:
    holed = tmp_path / "holed.csv"
    holed.write_text("1,2,3,pv,1511600000\n1,,3,pv,1511600001\n1,2,3,pv,1511600002\n")
    with pytest.raises(ValueError, match="incomplete rows, e.g. lines \\[2\\]"):
        load_taobao_csv(holed)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("1,2,3,pv,1511600000\n1,2,3,share,1511600001\n")
    with pytest.raises(ValueError, match="'share' at line 2"):
        load_taobao_csv(unknown)


# --- MovieLens -----------------------------------------------------------------------------


def test_movielens_ratings_become_views_with_their_rating() -> None:
    frame = load_movielens()
    assert_normalised(frame)
    assert frame.height == 100_000
    assert frame["behavior"].unique().to_list() == ["view"]
    assert frame["user_id"].n_unique() == 943
    assert frame["item_id"].n_unique() == 1_682
    counts = dict(frame["rating"].value_counts().iter_rows())
    assert counts == {1.0: 6_110, 2.0: 11_370, 3.0: 27_145, 4.0: 34_174, 5.0: 21_201}
    assert load_movielens(min_rating=5).height == 21_201


def test_movielens_is_ordered_by_time_then_numeric_user_and_item() -> None:
    frame = load_movielens()
    numeric = frame.with_columns(pl.col("user_id", "item_id").cast(pl.Int64))
    assert numeric.equals(numeric.sort("ts", "user_id", "item_id"))
    assert frame["ts"].min() == 874_724_710  # 1997-09-20 03:05:10 UTC
    assert frame.equals(load_movielens())
    assert load_movielens(limit=10).equals(frame.head(10))


def test_movielens_category_is_the_first_genre_of_the_item() -> None:
    frame = load_movielens()
    category_of = dict(frame.select("item_id", "category_id").unique().iter_rows())
    assert category_of["1"] == "Animation"  # Toy Story: Animation, Children's, Comedy
    assert category_of["2"] == "Action"  # GoldenEye: Action, Adventure, Thriller
    # Two items are flagged only "unknown": no category rather than a fake one.
    assert category_of["267"] is None and category_of["1373"] is None
    assert frame["category_id"].null_count() == 10


def test_movielens_users_hold_the_cold_start_profile() -> None:
    users = movielens_users()
    assert users.columns == ["user_id", "age", "gender", "occupation", "zip"]
    assert users.height == 943
    assert dict(users["gender"].value_counts().iter_rows()) == {"M": 670, "F": 273}
    assert (users["age"].min(), users["age"].max()) == (7, 73)
    assert users["occupation"].n_unique() == 21
    assert users.row(0) == ("1", 24, "M", "technician", "85711")


# --- DIGINETICA ----------------------------------------------------------------------------


def test_diginetica_joins_views_and_purchases_with_categories() -> None:
    frame = load_diginetica()
    assert_normalised(frame, ts_dtype=pl.Float64)
    counts = dict(frame["behavior"].value_counts().iter_rows())
    assert counts == {"view": 12_391, "purchase": 18_025}
    assert frame["category_id"].null_count() == 0  # every viewed/purchased item has one
    assert frame["session_id"].null_count() == 0
    purchases = frame.filter(pl.col("behavior") == "purchase")
    assert purchases["session_id"].n_unique() == 12_630
    logged_in = purchases.filter(~pl.col("user_id").str.starts_with("s"))
    assert logged_in["user_id"].n_unique() == 4_425
    anonymous = frame.filter(pl.col("user_id").str.starts_with("s"))
    assert anonymous.height == 11_322 + 7_681
    assert (anonymous["user_id"] == "s" + anonymous["session_id"]).all()


def test_diginetica_events_stay_on_their_recorded_day_in_time_order() -> None:
    frame = load_diginetica()
    assert_time_ordered(frame, "seq")
    days = frame.select(pl.from_epoch(pl.col("ts").cast(pl.Int64)).dt.date().alias("day"))
    assert days["day"].min() == datetime(2016, 1, 2).date()
    assert days["day"].max() == datetime(2016, 6, 17).date()
    # First view of the sample: session 1, 2016-05-09, 526,309 ms into the session.
    first_view = frame.filter(pl.col("seq") == 1).row(0, named=True)
    assert first_view["item_id"] == "81766" and first_view["session_id"] == "1"
    assert first_view["ts"] == pytest.approx(datetime(2016, 5, 9, tzinfo=UTC).timestamp() + 526.309)
    assert frame.equals(load_diginetica())


# --- by name -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("taobao", 84_252),
        ("movielens", 100_000),
        ("movielens-100k", 100_000),
        ("diginetica", 30_416),
    ],
)
def test_load_dataset_by_name(name: str, rows: int) -> None:
    assert load_dataset(name).height == rows
    assert load_dataset(name, limit=7).height == 7


def test_unknown_dataset_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'retailrocket'"):
        load_dataset("retailrocket")
    assert datasets.canonical_dataset_name("MovieLens-100K") == "movielens"
