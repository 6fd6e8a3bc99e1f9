"""MovieLens (ml-latest / ml-latest-small CSV layout) -> day partitions (`matta convert movielens`).

Inputs in `input_dir`: `ratings.csv` (userId, movieId, rating, timestamp), `movies.csv`
(movieId, title "Name (1995)", genres "A|B"), `tags.csv` (userId, movieId, tag, timestamp).

One output row per rating, columns as in `feature_specs/movielens.yaml`:
  * user: `user_id`;
  * context: `hour` (0-23) and `weekday` (0 = Monday) of the UTC timestamp;
  * item: `movie_id`, `genres` (list of strings; "(no genres listed)" -> []), `year` (from the
    title, null when the title has none), `tags` (the movie's distinct tags, lower-cased and
    trimmed, sorted; a movie-level attribute, so it includes tags given after the rating);
  * label: `click` = rating >= 4 (int8); `rating` and `timestamp` are kept for reference.
Rows are sorted by (timestamp, user_id, movie_id). `period` sets the partition granularity:
`day`, `week` (weeks start on Monday) or `month`; the partition value is the period's first day.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_matta.data.adapters import check_range, parse_column, read_csv_strings
from recsys_matta.data.partitions import staged_output
from recsys_matta.errors import DataError
from recsys_matta.specs.feature_spec import Partition

PERIODS = {"day": "1d", "week": "1w", "month": "1mo"}
NO_GENRES = "(no genres listed)"
_YEAR = r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$"  # "(1995)" or "(2006-2007)" at the end


def _ratings(path: Path) -> pl.DataFrame:
    raw = read_csv_strings(path, ["userId", "movieId", "rating", "timestamp"])
    rating = parse_column(raw["rating"], pl.Float32, path, "rating")
    check_range(rating, 0.0, 5.0, path, "rating")
    timestamp = parse_column(raw["timestamp"], pl.Int64, path, "timestamp")
    check_range(timestamp, 0, 2**40, path, "timestamp")  # seconds since 1970; 2**40 s = year 36812
    return pl.DataFrame(
        {
            "user_id": parse_column(raw["userId"], pl.Int64, path, "userId"),
            "movie_id": parse_column(raw["movieId"], pl.Int64, path, "movieId"),
            "rating": rating,
            "timestamp": timestamp,
        }
    )


def _movies(path: Path) -> pl.DataFrame:
    raw = read_csv_strings(path, ["movieId", "title", "genres"])
    movie_id = parse_column(raw["movieId"], pl.Int64, path, "movieId")
    dup = movie_id.is_duplicated().arg_true()
    if len(dup):
        raise DataError(
            f"{path}: column 'movieId': movie {movie_id[int(dup[0])]} appears more than once "
            f"(line {int(dup[0]) + 2})"
        )
    genres = raw["genres"].fill_null("").str.split("|")
    return pl.DataFrame({"movie_id": movie_id}).with_columns(
        genres=genres.list.eval(
            pl.element().filter((pl.element() != "") & (pl.element() != NO_GENRES))
        ),
        year=raw["title"].fill_null("").str.extract(_YEAR, 1).cast(pl.Int32, strict=False),
    )


def _tags(path: Path) -> pl.DataFrame:
    raw = read_csv_strings(path, ["userId", "movieId", "tag", "timestamp"])
    movie_id = parse_column(raw["movieId"], pl.Int64, path, "movieId")
    tag = raw["tag"].str.strip_chars().str.to_lowercase()
    return (
        pl.DataFrame({"movie_id": movie_id, "tag": tag})
        .filter(pl.col("tag").is_not_null() & (pl.col("tag") != ""))
        .group_by("movie_id")
        .agg(tags=pl.col("tag").unique().sort())
    )


def load(input_dir: Path) -> pl.DataFrame:
    """The converted rows (the output columns), sorted by time; see the module docstring."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DataError(f"{input_dir}: input folder not found")
    ratings = _ratings(input_dir / "ratings.csv")
    movies = _movies(input_dir / "movies.csv")
    tags = _tags(input_dir / "tags.csv")
    ts = pl.from_epoch(pl.col("timestamp"), time_unit="s")
    return (
        ratings.join(movies, on="movie_id", how="left")
        .join(tags, on="movie_id", how="left")
        .with_columns(
            hour=ts.dt.hour().cast(pl.Int32),
            weekday=(ts.dt.weekday() - 1).cast(pl.Int32),  # polars: Monday = 1
            genres=pl.col("genres").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            tags=pl.col("tags").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            click=(pl.col("rating") >= 4).cast(pl.Int8),
        )
        .sort(["timestamp", "user_id", "movie_id"])
        .select(
            "user_id",
            "hour",
            "weekday",
            "movie_id",
            "genres",
            "year",
            "tags",
            "click",
            "rating",
            "timestamp",
        )
    )


def convert(input_dir: Path, out: Path, period: str = "week") -> list[str]:
    """Convert a MovieLens folder into `<out>/day=<period start>/part-*.parquet`.

    Args:
        input_dir: folder with ratings.csv, movies.csv, tags.csv.
        out: output root; its day folders are replaced as a whole when the conversion succeeds.
        period: partition granularity: day, week or month.

    Returns the partition values written, in order.
    """
    if period not in PERIODS:
        raise DataError(f"--period {period!r}: expected one of {', '.join(PERIODS)}")
    df = load(input_dir)
    start = pl.from_epoch(pl.col("timestamp"), time_unit="s").dt.truncate(PERIODS[period]).dt.date()
    df = df.with_columns(_period=start)
    partition = Partition()
    with staged_output(Path(out), partition, replace_all=True) as staged:
        for (day,), part in df.partition_by("_period", as_dict=True, maintain_order=True).items():
            staged.day(day).write(part.drop("_period").to_arrow())
    return sorted(staged.writers)
