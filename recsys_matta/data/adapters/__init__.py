"""Adapters that turn public datasets into day partitions (`matta convert ...`).

Shared helpers: every bad-input problem becomes a `DataError` that names the file, the column
and, where there is one, the line and the offending value.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_matta.errors import DataError


def require_file(path: Path) -> Path:
    """`path` if it is a non-empty file; otherwise a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def read_csv_strings(path: Path, required: list[str]) -> pl.DataFrame:
    """Read a CSV with a header, every column as a string (types are checked by `parse_column`
    so errors can name the line). Missing required columns and files without data rows are
    DataErrors."""
    require_file(path)
    try:
        df = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as e:
        raise DataError(f"{path}: not a readable CSV file: {str(e).splitlines()[0]}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))} "
            f"(found {', '.join(map(repr, df.columns))})"
        )
    if df.height == 0:
        raise DataError(f"{path}: file has a header but no data rows")
    return df


def first_bad(mask: pl.Series) -> int | None:
    """Index of the first True in a boolean series, or None."""
    idx = mask.arg_true()
    return int(idx[0]) if len(idx) else None


def parse_column(
    values: pl.Series,
    dtype: pl.DataType,
    path: Path,
    column: str,
    first_line: int = 2,
    allow_null: bool = False,
) -> pl.Series:
    """Cast a string column to a numeric `dtype`, vectorised. A value that does not parse (or an
    empty value when not `allow_null`) is a DataError naming file, column, line and value.

    Args:
        values: the raw string column.
        dtype: target polars dtype.
        path: file the column came from (for messages).
        column: column name (for messages).
        first_line: file line number of `values[0]` (2 for a CSV with a header).
        allow_null: keep empty values as null instead of failing.
    """
    stripped = values.str.strip_chars()
    out = stripped.cast(dtype, strict=False)
    bad = out.is_null() & stripped.is_not_null() & (stripped != "")
    i = first_bad(bad)
    if i is not None:
        raise DataError(
            f"{path}: column {column!r}: expected {_type_name(dtype)}, got {values[i]!r} "
            f"(line {first_line + i})"
        )
    if not allow_null:
        i = first_bad(out.is_null())
        if i is not None:
            raise DataError(f"{path}: column {column!r}: empty value (line {first_line + i})")
    return out


def check_range(
    values: pl.Series, low: float, high: float, path: Path, column: str, first_line: int = 2
) -> None:
    """DataError naming file, column, line and value when a value lies outside [low, high]."""
    i = first_bad(((values < low) | (values > high)).fill_null(False))
    if i is not None:
        raise DataError(
            f"{path}: column {column!r}: value {values[i]} outside [{low:g}, {high:g}] "
            f"(line {first_line + i})"
        )


def _type_name(dtype: pl.DataType) -> str:
    return "an integer" if dtype.is_integer() else "a number"
