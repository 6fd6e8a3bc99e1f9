"""Streaming, rank-sharded reader: day partitions -> `Batch`es with bounded memory.

    reader = DayReader(spec, root, batch_size=4096, rank=r, world_size=n)
    for day in reader.select_days("2026-01-01..2026-01-07"):
        for batch in reader.iter_day(day):
            ...
        log(reader.counts(day).as_dict())

Pipeline of one day (with `prefetch > 0`: a decode thread and an encode thread, each behind a
bounded queue, so decoding, encoding and the consumer's training step overlap):

    plan (Parquet metadata: this rank's files / row groups / row range, its batch sizes)
      -> [decode thread]  ParquetFile.iter_batches over those row groups
      -> [encode thread]  zero-copy slices cut at the batch boundaries (one file per slice)
                          -> encode_table (the code serving uses) -> [bounded shuffle] -> Batch
      -> consumer

Nothing ever holds a whole day: see `DayReader` for the bound on rows held.
"""

from __future__ import annotations

import math
import queue
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_matta.data.batch import Batch
from recsys_matta.data.encode import (
    Encoded,
    ReadCounts,
    check_schema,
    column_kinds,
    encode_table,
    label_columns,
    needed_columns,
    to_batch,
)
from recsys_matta.data.encode import id_counts as scan_ids
from recsys_matta.data.encode import label_counts as scan_labels
from recsys_matta.data.partitions import day_dir, list_days, parquet_files, parse_day
from recsys_matta.errors import DataError
from recsys_matta.specs import FeatureSpec

LabelCheck = Literal["spec", "drop", "fail"]
_RAW_PREFETCH = 2  # decoded Parquet chunks queued between the decode and the encode thread


@dataclass(frozen=True)
class _Piece:
    """Rows `[skip, skip + take)` of the concatenation of `row_groups` of one file."""

    path: Path
    row_groups: list[int]
    skip: int
    take: int


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot be read as Parquet: {e}") from None


def _segment_sizes(m: int, k: int) -> list[int]:
    """`m` rows in `k` near-equal batches (the first `m % k` get one more row)."""
    return [m // k + (1 if i < m % k else 0) for i in range(k)]


class DayReader:
    """Streams the days of a partitioned Parquet dataset as `Batch`es.

    Sharding and the remainder policy: a day with `n` rows (from the Parquet metadata, the
    files in name order) is split into `world_size` contiguous row ranges; rank `r` gets
    `[r * n // N, (r + 1) * n // N)` and reads only the row groups overlapping it (a row group
    on a boundary is decoded by both neighbours, each keeping its own rows). Every rank splits
    its range into the same number `K = ceil(n / (N * batch_size))` of batches of near-equal
    size (they differ by at most one row across ranks and batches, and never exceed
    `batch_size`). So the ranks are disjoint, their union is every row exactly once, and every
    rank yields exactly `K` batches per day (collectives cannot hang). Rows dropped for invalid
    labels make a batch smaller than its share; a batch is empty only when all its rows were
    dropped or the rank has fewer rows than `K` (a day with fewer than `N` rows, or
    `batch_size` 1). Such a size-0 batch is still yielded (to keep the count equal); its KJT
    has stride 0, which torchrec's `EmbeddingBagCollection` does not accept, so callers must
    handle `batch.size == 0`.

    Shuffling (`shuffle_buffer = S > 0`): batch `i` keeps its size (the kept rows of its raw
    share) but is emitted only once `S` more raw rows have been read, its rows drawn at random
    from the pool of pending rows (about `S + batch_size`), seeded by `(seed, day, rank)`. The
    pool is re-permuted with the new rows every `S // 2` rows, so windows overlap. Rows never
    cross days or ranks.

    Memory: at most `prefetch` finished batches wait in the queue, the encode thread holds one
    more and the rows of the batch it is building; the decode thread keeps at most
    `2 + 1` chunks of `read_rows` rows ahead of the one being cut; shuffling adds fewer than
    `S + batch_size` pending rows. Rows read ahead of the consumer are therefore below
    `batch_size * (prefetch + 2) + 4 * read_rows` (`batch_size + read_rows` with
    `prefetch = 0`), plus `S + batch_size` with shuffling, whatever the size of the day.
    (Parquet also holds the compressed pages of the row group being decoded.)

    Args:
        spec: the feature spec.
        root: partition root (`<root>/day=YYYY-MM-DD/*.parquet`).
        batch_size: maximum rows per batch.
        rank: this process's rank.
        world_size: number of ranks reading the same days.
        shuffle_buffer: rows in the shuffle window (0 = file order).
        seed: shuffle seed.
        prefetch: batches prepared ahead by the background threads (0 = no threads: decoding
            and encoding run in the caller).
        label_check: invalid labels: `spec` (the spec's `labels.on_invalid`), `drop` or `fail`.
        read_rows: rows per Parquet read chunk (`iter_batches(batch_size=...)`).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        root: str | Path,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 0,
        seed: int = 0,
        prefetch: int = 2,
        label_check: LabelCheck = "spec",
        read_rows: int = 65_536,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world {world_size}")
        if read_rows < 1 or shuffle_buffer < 0 or prefetch < 0:
            raise ValueError("need read_rows >= 1, shuffle_buffer >= 0 and prefetch >= 0")
        if label_check not in ("spec", "drop", "fail"):
            raise ValueError(f"label_check must be spec, drop or fail, got {label_check!r}")
        self.spec = spec
        self.root = Path(root)
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.prefetch = prefetch
        self.read_rows = read_rows
        self.on_invalid = spec.labels.on_invalid if label_check == "spec" else label_check
        self.columns = needed_columns(spec, labels=True)
        self._counts: dict[str, ReadCounts] = {}
        self._id_counts: dict[str, dict[str, ReadCounts]] = {}

    # ---------------------------------------------------------------------------------- days

    def days(self) -> list[str]:
        """Days under `root`, chronological."""
        return list_days(self.root, self.spec.partition)

    def select_days(self, expr: str | None) -> list[str]:
        """Days selected by `expr`, chronological: None or "" = all; `A..B` = every available
        day from A to B inclusive (either end may be left out); `A,B,C` or `A` = those days,
        each of which must exist."""
        available = self.days()
        if not expr or not expr.strip():
            return available
        expr = expr.strip()
        if ".." in expr:
            lo_s, _, hi_s = (s.strip() for s in expr.partition(".."))
            lo = parse_day(lo_s, self.spec) if lo_s else None
            hi = parse_day(hi_s, self.spec) if hi_s else None
            if lo is not None and hi is not None and lo > hi:
                raise DataError(f"day range {expr!r}: {lo_s} is after {hi_s}")
            chosen = [
                d
                for d in available
                if (lo is None or parse_day(d, self.spec) >= lo)
                and (hi is None or parse_day(d, self.spec) <= hi)
            ]
            if not chosen:
                raise DataError(f"day range {expr!r}: no days under {self.root}")
            return chosen
        wanted = [s.strip() for s in expr.split(",") if s.strip()]
        have = set(available)
        for d in wanted:
            parse_day(d, self.spec)
            if d not in have:
                raise DataError(
                    f"day {d} not found under {self.root} (no folder {day_dir(self.root, self.spec, d).name}); "
                    "nothing is trained and the day is not marked finished"
                )
        return sorted(set(wanted), key=lambda d: parse_day(d, self.spec))

    def _folder(self, day: str) -> Path:
        folder = day_dir(self.root, self.spec, day)
        if not folder.is_dir():
            raise DataError(f"day {day} not found under {self.root} (no folder {folder.name})")
        return folder

    def _metadata(self, day: str) -> list[tuple[Path, list[int]]]:
        """[(file, rows per row group)] of a day in read order; schemas checked."""
        out = []
        for path in parquet_files(self._folder(day)):
            pf = _open(path)
            try:
                check_schema(self.spec, pf.schema_arrow, str(path), labels=True)
                md = pf.metadata
                out.append((path, [md.row_group(i).num_rows for i in range(md.num_row_groups)]))
            finally:
                pf.close()
        return out

    def column_kinds(self, day: str) -> dict[str, str]:
        """{column: kind} (`encode.type_kind`) of the columns the spec reads, the same in every
        file of the day; all-null columns say nothing. Raises `DataError` naming both files
        when two files of the day disagree."""
        out: dict[str, tuple[str, Path]] = {}
        for path in parquet_files(self._folder(day)):
            pf = _open(path)
            try:
                kinds = column_kinds(self.spec, pf.schema_arrow)
            finally:
                pf.close()
            for col, kind in kinds.items():
                if kind == "null":
                    continue
                seen = out.setdefault(col, (kind, path))
                if seen[0] != kind:
                    raise DataError(
                        f"day {day}: column {col!r} is {seen[0]} in {seen[1]} but {kind} in {path}; "
                        f"every file of a day must have the same column types"
                    )
        return {c: k for c, (k, _) in out.items()}

    def num_rows(self, day: str) -> int:
        """Rows of the whole day (all ranks), from the Parquet metadata; no data is read."""
        return sum(sum(rgs) for _, rgs in self._metadata(day))

    def label_counts(self, day: str) -> ReadCounts:
        """The label counts of the whole day (all ranks), from its label columns alone: what the
        loss budget needs before the day's data pass."""
        total, cols = ReadCounts(), [c for c, _ in label_columns(self.spec)]
        for path in parquet_files(self._folder(day)):
            total = total + scan_labels(self.spec, pq.read_table(path, columns=cols), str(path), self.on_invalid)
        return total

    def id_counts(self, day: str) -> dict[str, ReadCounts]:
        """{file: its sparse-id counts} of the whole day (all ranks), from the sparse columns
        alone (no hashing): what the id budget needs before the day's data pass. Cached."""
        cache = self._id_counts
        if day not in cache:
            cols = list(dict.fromkeys(f.source for f in self.spec.sparse))
            cache[day] = {
                str(path): scan_ids(self.spec, pq.read_table(path, columns=cols), str(path))
                for path in parquet_files(self._folder(day))
            }
        return cache[day]

    def counts(self, day: str) -> ReadCounts:
        """This rank's counts for `day`, available once `iter_day(day)` has been exhausted."""
        if day not in self._counts:
            raise KeyError(f"no counts for day {day}: iterate iter_day({day!r}) to the end first")
        return self._counts[day]

    # ------------------------------------------------------------------------------ planning

    def _plan(self, day: str) -> tuple[list[_Piece], list[int]]:
        """This rank's pieces (files / row groups / row range) and its batch sizes in raw rows."""
        files = self._metadata(day)
        n = sum(sum(rgs) for _, rgs in files)
        if n == 0:
            return [], []
        lo = self.rank * n // self.world_size
        hi = (self.rank + 1) * n // self.world_size
        k = math.ceil(n / (self.world_size * self.batch_size))
        pieces: list[_Piece] = []
        start = 0  # global row index of the current row group's first row
        for path, rgs in files:
            chosen: list[int] = []
            skip = take = 0
            for i, rows in enumerate(rgs):
                a, b = max(lo, start), min(hi, start + rows)
                if a < b:
                    if not chosen:
                        skip = a - start
                    chosen.append(i)
                    take += b - a
                start += rows
            if chosen:
                pieces.append(_Piece(path, chosen, skip, take))
        return pieces, _segment_sizes(hi - lo, k)

    # ------------------------------------------------------------------------------ streaming

    def _raw(self, pieces: list[_Piece]) -> Iterator[tuple[pa.RecordBatch, Path]]:
        """This rank's raw rows as record batches of at most `read_rows` rows."""
        for piece in pieces:
            pf = _open(piece.path)
            skip, left = piece.skip, piece.take
            try:
                chunks = pf.iter_batches(
                    batch_size=self.read_rows, row_groups=piece.row_groups, columns=self.columns
                )
                for rb in chunks:
                    if skip >= rb.num_rows:
                        skip -= rb.num_rows
                        continue
                    rb = rb.slice(skip, min(rb.num_rows - skip, left))
                    skip = 0
                    left -= rb.num_rows
                    yield rb, piece.path
                    if left == 0:
                        break
            except (OSError, pa.ArrowException) as e:
                raise DataError(f"{piece.path}: cannot be read: {e}") from None
            finally:
                pf.close()
            if left:
                raise DataError(f"{piece.path}: {left} rows fewer than its metadata says")

    def _segments(
        self, pieces: list[_Piece], sizes: list[int]
    ) -> Iterator[tuple[list[Encoded], ReadCounts]]:
        """For every batch in `sizes`: its raw rows encoded (one `Encoded` per file slice)."""
        raw = self._raw(pieces)
        if self.prefetch:  # decode in its own thread, overlapping the encoding
            raw = _prefetch(raw, _RAW_PREFETCH)
        try:
            rb: pa.RecordBatch | None = None
            path = Path()
            for size in sizes:
                parts: list[Encoded] = []
                need = size
                while need:
                    if rb is None or rb.num_rows == 0:
                        rb, path = next(raw)
                    piece, rb = rb.slice(0, need), rb.slice(need)
                    need -= piece.num_rows
                    enc = encode_table(
                        self.spec, piece, str(path), on_invalid=self.on_invalid, check=False
                    )
                    parts.append(enc)
                if not parts:  # a rank with fewer rows than batches
                    parts.append(Encoded.empty(self.spec))
                yield parts, sum((p.counts for p in parts), ReadCounts())
        finally:
            raw.close()

    def _encoded_batches(
        self, day: str, pieces: list[_Piece], sizes: list[int]
    ) -> Iterator[Encoded]:
        """The day's batches for this rank (synchronous); stores the day's counts at the end."""
        total = ReadCounts()
        segments = self._segments(pieces, sizes)
        if self.shuffle_buffer:
            segments = self._shuffled(day, segments, sizes)
            for enc, counts in segments:
                total = total + counts
                yield enc
        else:
            for parts, counts in segments:
                total = total + counts
                yield Encoded.concat(parts)
        self._counts[day] = total

    def _shuffled(
        self, day: str, segments: Iterator[tuple[list[Encoded], ReadCounts]], sizes: list[int]
    ) -> Iterator[tuple[Encoded, ReadCounts]]:
        """Bounded-buffer shuffle. Batch i keeps its kept-row count; it is emitted once `S` raw
        rows past its end have been read, its rows taken from a randomly permuted pool of the
        pending rows. The pool is rebuilt (pending rows + new rows, permuted) whenever `S // 2`
        new rows have arrived or it runs short."""
        rng = np.random.default_rng([self.seed, parse_day(day, self.spec).toordinal(), self.rank])
        s = self.shuffle_buffer
        pool: Encoded | None = None  # pending rows in random order; rows before `cursor` are out
        cursor = 0
        fresh: list[Encoded] = []  # rows read but not yet in the pool
        fresh_rows = 0

        def emit(k: int) -> Encoded:
            nonlocal pool, cursor, fresh, fresh_rows
            if k == 0:
                return Encoded.empty(self.spec)
            left = 0 if pool is None else pool.num_rows - cursor
            if left < k or fresh_rows >= max(s // 2, 1):
                rest = [pool.take(np.arange(cursor, pool.num_rows))] if pool is not None else []
                merged = Encoded.concat(rest + fresh)
                pool = merged.take(rng.permutation(merged.num_rows))
                cursor, fresh, fresh_rows = 0, [], 0
            assert pool is not None
            out = pool.take(np.arange(cursor, cursor + k))
            cursor += k
            return out

        due: deque[tuple[int, int, ReadCounts]] = deque()  # (raw end, kept rows, counts)
        read_end = 0
        for (parts, counts), size in zip(segments, sizes):
            fresh += [p for p in parts if p.num_rows]
            fresh_rows += counts.rows_kept
            read_end += size
            due.append((read_end, counts.rows_kept, counts))
            while due and read_end >= due[0][0] + s:
                _, k, c = due.popleft()
                yield emit(k), c
        while due:
            _, k, c = due.popleft()
            yield emit(k), c

    def iter_day(self, day: str) -> Iterator[Batch]:
        """Stream one day as `Batch`es (see the class docstring for sharding and memory).

        Raises `DataError` at once for a missing day or a file with a bad schema; warns and
        yields nothing for an empty day. Read errors in the background thread are raised in
        the consumer. Stopping early (break, close) stops the thread."""
        self._counts.pop(day, None)
        pieces, sizes = self._plan(day)  # fail fast: missing day, unreadable file, bad schema
        if not sizes:
            warnings.warn(f"day {day} under {self.root} has no rows; it yields no batches")
            self._counts[day] = ReadCounts()
            return iter([])
        batches = (to_batch(e) for e in self._encoded_batches(day, pieces, sizes))
        if self.prefetch == 0:
            return batches
        return _prefetch(batches, self.prefetch)


# ---------------------------------------------------------------------------------- prefetch

_END = object()
T = TypeVar("T")


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _prefetch(source: Iterator[T], depth: int) -> Iterator[T]:
    """Run `source` in a daemon thread, `depth` items ahead, behind a bounded queue."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_Failure(e))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[T]:
        thread = threading.Thread(target=produce, name="DayReader-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            stop.set()
            thread.join()

    return consume()
