"""Has a day's partition landed? (`matta day-ready`, the pipeline's sensor.)

Two rules, because upstream writers differ:

* `success`: the writer drops a marker file (Spark/Hadoop's `_SUCCESS`) into the day's folder
  after its last file; the day is ready when the marker exists.
* `rows`: no marker; the day is ready when its folder holds at least one Parquet file with rows
  (from the Parquet footers, no data read). A writer that renames finished files into place
  (like `matta generate` and `recsys_matta.data.partitions.atomic_dir`) is safe with this rule.

The files counted are the ones the day reader reads: `*.parquet` not starting with `.` or `_`.
No torch here: a sensor pokes this every few minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recsys_matta.data.partitions import day_dir
from recsys_matta.specs.feature_spec import FeatureSpec

Rule = Literal["success", "rows"]
RULES: tuple[str, ...] = ("success", "rows")


@dataclass(frozen=True)
class Landing:
    ready: bool
    why: str


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix == ".parquet" and not p.name.startswith((".", "_"))
    )


def day_landed(root: Path, spec: FeatureSpec, day: str, rule: Rule = "success", marker: str = "_SUCCESS") -> Landing:
    """Whether `day` under `root` is ready by `rule` (see the module docstring)."""
    folder = day_dir(Path(root), spec, day)  # a malformed day is a DataError
    if not folder.is_dir():
        return Landing(False, f"day {day}: {folder} does not exist yet")
    if rule == "success":
        if (folder / marker).is_file():
            return Landing(True, f"day {day}: {folder / marker} exists")
        return Landing(False, f"day {day}: no {marker} marker in {folder} yet")
    if rule != "rows":
        raise ValueError(f"unknown landing rule {rule!r}; use one of {', '.join(RULES)}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    files, rows = _parquet_files(folder), 0
    for path in files:
        try:
            rows += pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException):  # still being written, or broken: the train stage says which
            continue
    if rows > 0:
        return Landing(True, f"day {day}: {rows} rows in {len(files)} Parquet file(s) under {folder}")
    return Landing(False, f"day {day}: no Parquet rows under {folder} yet ({len(files)} file(s))")
