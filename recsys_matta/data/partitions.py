"""Hive-style day partitions: naming, listing, and atomic writing.

Layout: `<root>/<column>=<value>/part-00000.parquet, part-00001.parquet, ...` where `<value>` is
the day formatted with the spec's `partition.format` (`day=2026-01-01/`).

Writers never leave a half-written day behind: a day is written into a hidden temporary folder
beside the final one (`<root>/.tmp-day=2026-01-01-<pid>-<n>/`) and renamed into place when its
last file is closed. `list_days` skips hidden folders, so readers never see a day in progress.
Parquet writer options are pinned (`write_parquet`), so the same table gives the same bytes.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_matta.errors import DataError
from recsys_matta.specs.feature_spec import FeatureSpec, Partition

PART_ROWS = 200_000  # default rows per part file (bounded writer / reader memory)
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_counter = itertools.count()


def _partition(p: Partition | FeatureSpec) -> Partition:
    return p.partition if isinstance(p, FeatureSpec) else p


def parse_day(s: str, partition: Partition | FeatureSpec) -> date:
    """`"2026-01-01"` -> `date(2026, 1, 1)` with the partition's format; DataError if it fails."""
    fmt = _partition(partition).format
    try:
        return datetime.strptime(s, fmt).date()
    except ValueError:
        raise DataError(f"partition value {s!r} does not match the format {fmt!r}") from None


def format_day(day: date | str, partition: Partition | FeatureSpec) -> str:
    """The partition value of `day`: a date is formatted, a string is checked and kept as is."""
    if isinstance(day, str):
        parse_day(day, partition)
        return day
    return day.strftime(_partition(partition).format)


def day_dir(root: Path, partition: Partition | FeatureSpec, day: date | str) -> Path:
    """`<root>/<column>=<value>`: the folder of one day (it may not exist)."""
    p = _partition(partition)
    return Path(root) / f"{p.column}={format_day(day, p)}"


def parquet_files(folder: Path) -> list[Path]:
    """The Parquet files of one day folder in name order: THE listing every reader of a day
    uses (training reader, gate scoring, Teacher). Hidden (`.`) and `_`-prefixed files
    (in-progress writes, markers such as `_SUCCESS`) are skipped; [] when the folder is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix == ".parquet" and not p.name.startswith((".", "_"))
    )


def day_files(root: Path, partition: Partition | FeatureSpec, day: date | str) -> list[Path]:
    """`parquet_files` of the folder of `day` under `root`."""
    return parquet_files(day_dir(root, partition, day))


def list_days(root: Path, partition: Partition | FeatureSpec) -> list[str]:
    """Partition values of the day folders under `root`, sorted chronologically.

    Only folders named `<column>=<value>` count; hidden folders (temporary, in-progress) and
    other files are skipped. A matching folder whose value does not parse is a DataError.
    """
    root = Path(root)
    p = _partition(partition)
    if not root.is_dir():
        raise DataError(f"{root}: partition root not found (expected {p.column}=<value>/ folders)")
    prefix = f"{p.column}="
    days: list[tuple[date, str]] = []
    for entry in root.iterdir():
        if not entry.is_dir() or not entry.name.startswith(prefix):
            continue
        value = entry.name[len(prefix) :]
        try:
            days.append((parse_day(value, p), value))
        except DataError as e:
            raise DataError(f"{entry}: {e}") from None
    return [value for _, value in sorted(days)]


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write one Parquet file with pinned options (same table -> same bytes; no timestamps)."""
    pq.write_table(
        table,
        path,
        row_group_size=64 * 1024,
        version="2.6",
        data_page_version="1.0",
        compression="zstd",
        compression_level=3,
        use_dictionary=True,
        write_statistics=True,
        store_schema=True,
    )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder `src` to `dst`, replacing an existing `dst`."""
    old = None
    if dst.exists():
        old = dst.with_name(f"{_OLD_PREFIX}{dst.name}-{os.getpid()}-{next(_counter)}")
        os.rename(dst, old)
    os.rename(src, dst)
    _fsync_dir(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success rename it to `final` (replacing an
    existing one), on error delete it and leave `final` untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{_TMP_PREFIX}{final.name}-{os.getpid()}-{next(_counter)}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_dir(tmp, final)


class PartWriter:
    """Writes the part files of one folder, `part-00000.parquet`, `part-00001.parquet`, ...

    `write(table)` buffers rows and writes a part file whenever `part_rows` rows are waiting, so
    any batch sizes give parts of exactly `part_rows` rows (the last one may be shorter);
    `close()` writes the rest. Memory is bounded by `part_rows` plus one batch.

    Args:
        folder: the (temporary) folder to write into.
        part_rows: rows per part file.
    """

    def __init__(self, folder: Path, part_rows: int = PART_ROWS) -> None:
        self.folder = Path(folder)
        self.part_rows = part_rows
        self.parts = 0
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.part_rows:
            self._flush(final=False)

    def close(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        if not self._pending:
            return
        data = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        start = 0
        while data.num_rows - start >= self.part_rows or (final and start < data.num_rows):
            chunk = data.slice(start, self.part_rows)
            write_parquet(chunk, self.folder / f"part-{self.parts:05d}.parquet")
            self.parts += 1
            self.rows += chunk.num_rows
            start += chunk.num_rows
        rest = data.slice(start)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows


@contextmanager
def day_writer(
    root: Path, partition: Partition | FeatureSpec, day: date | str, part_rows: int = PART_ROWS
) -> Iterator[PartWriter]:
    """Write one day atomically: `with day_writer(root, p, day) as w: w.write(table); ...`.
    The day folder appears (replacing an older one) only when the block ends without error."""
    with atomic_dir(day_dir(root, partition, day)) as tmp:
        writer = PartWriter(tmp, part_rows)
        yield writer
        writer.close()


class StagedOutput:
    """Several days written into one hidden staging folder, published together by `commit`.

    Use through `staged_output`; `day(d)` returns the PartWriter of day `d` (created on first
    use, so days may be written in any order and a day may get several `write` calls).
    """

    def __init__(self, root: Path, partition: Partition, staging: Path, part_rows: int) -> None:
        self.root = root
        self.partition = partition
        self.staging = staging
        self.part_rows = part_rows
        self.writers: dict[str, PartWriter] = {}

    def day(self, day: date | str) -> PartWriter:
        value = format_day(day, self.partition)
        if value not in self.writers:
            folder = day_dir(self.staging, self.partition, value)
            folder.mkdir()
            self.writers[value] = PartWriter(folder, self.part_rows)
        return self.writers[value]

    def commit(self, replace_all: bool) -> list[str]:
        """Move every staged day into `root` (replacing existing days with the same value; with
        `replace_all`, also deleting the other day folders). Returns the day values."""
        for writer in self.writers.values():
            writer.close()
        stale = set(list_days(self.root, self.partition)) - set(self.writers) if replace_all else ()
        for value, writer in sorted(self.writers.items()):
            _replace_dir(writer.folder, day_dir(self.root, self.partition, value))
        for value in sorted(stale):
            shutil.rmtree(day_dir(self.root, self.partition, value))
        return sorted(self.writers)


@contextmanager
def staged_output(
    root: Path,
    partition: Partition | FeatureSpec,
    part_rows: int = PART_ROWS,
    replace_all: bool = False,
) -> Iterator[StagedOutput]:
    """Write a whole conversion so that nothing appears under `root` unless all of it succeeded:
    days are staged in `<root>/.tmp-staging-*/` and moved into place when the block ends
    without error. `replace_all` also deletes day folders of an earlier run that this run did
    not write (a re-conversion replaces the dataset instead of mixing with it)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{_TMP_PREFIX}staging-{os.getpid()}-{next(_counter)}"
    staging.mkdir()
    try:
        out = StagedOutput(root, _partition(partition), staging, part_rows)
        yield out
        out.commit(replace_all)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_partitions(
    root: Path,
    partition: Partition | FeatureSpec,
    days: Iterable[tuple[date | str, Iterable[pa.Table]]],
    part_rows: int = PART_ROWS,
) -> list[Path]:
    """Write `(day, tables)` pairs, each day atomically (its tables are consumed lazily, so a day
    never needs to be in memory as a whole). Returns the day folders written."""
    written = []
    for day, tables in days:
        with day_writer(root, partition, day, part_rows) as w:
            for t in tables:
                w.write(t)
        written.append(day_dir(root, partition, day))
    return written
