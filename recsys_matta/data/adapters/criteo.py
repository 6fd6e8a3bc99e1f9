"""Criteo display-ads data -> N consecutive day partitions (`matta convert criteo`).

Two layouts, detected from the first line:
  * public (Kaggle / Criteo Labs `train.txt`): tab-separated, no header, 40 fields
    `label, I1..I13, C1..C26`, empty fields allowed;
  * comma-separated with a header line naming `label, I1..I13, C1..C26` (any order; extra
    columns are ignored), as in the DeepCTR sample.

The public file is in time order without timestamps, so rows are split in file order into `days`
consecutive days of (nearly) equal size. The file is streamed (pyarrow CSV reader, 16 MiB
blocks) and converted block by block, vectorised; memory stays bounded by the block and part
sizes, never by the file. Output columns (see `feature_specs/criteo.yaml`): `label` int8 in
{0, 1}; `I1..I13` float32, null when empty (the spec's `default` fills them; the spec applies
`signed_log1p`); `C1..C26` strings, null when empty (an empty bag for the model). Values are
not trimmed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys_matta.data.adapters import check_range, first_bad, parse_column, require_file
from recsys_matta.data.partitions import staged_output
from recsys_matta.errors import DataError
from recsys_matta.specs.feature_spec import Partition

LABEL = "label"
DENSE = [f"I{i}" for i in range(1, 14)]
SPARSE = [f"C{i}" for i in range(1, 27)]
COLUMNS = [LABEL, *DENSE, *SPARSE]
BLOCK_BYTES = 16 << 20


def detect_layout(path: Path) -> tuple[str, bool]:
    """(delimiter, has_header) from the first line: a header's first field is `label`; a line
    with tabs is tab-separated, otherwise comma-separated."""
    with open(require_file(path), "rb") as f:
        first = f.readline(1 << 20).decode("utf-8", errors="replace").rstrip("\r\n")
    delimiter = "\t" if "\t" in first else ","
    fields = first.split(delimiter)
    has_header = fields[0].strip().strip('"').lower() == LABEL
    if has_header:
        names = [x.strip().strip('"') for x in fields]
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)} in the header "
                f"(expected label, I1..I13, C1..C26)"
            )
    elif len(fields) != len(COLUMNS):
        raise DataError(
            f"{path}: line 1 has {len(fields)} {'tab' if delimiter == chr(9) else 'comma'}-"
            f"separated fields; expected 40 (label, I1..I13, C1..C26) or a header line"
        )
    return delimiter, has_header


def count_rows(path: Path, has_header: bool) -> int:
    """Data rows = line count (a last line without a newline counts), minus the header."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            lines += block.count(b"\n")
            last = block[-1:]
    lines += last != b"\n"
    return lines - int(has_header)


def _batches(path: Path, delimiter: str, has_header: bool) -> Iterator[pa.RecordBatch]:
    """Stream the file as record batches of string columns (empty -> null)."""
    read = pacsv.ReadOptions(
        column_names=None if has_header else COLUMNS,
        autogenerate_column_names=False,
        block_size=BLOCK_BYTES,
        use_threads=True,
    )
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if has_header else False)
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in COLUMNS},
        include_columns=COLUMNS,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    try:
        reader = pacsv.open_csv(
            path, read_options=read, parse_options=parse, convert_options=convert
        )
        yield from reader
    except pa.ArrowInvalid as e:
        raise DataError(f"{path}: cannot parse as Criteo data: {str(e).splitlines()[0]}") from None


def _convert_batch(batch: pa.RecordBatch, path: Path, first_line: int) -> pa.Table:
    """Strings -> typed columns. Fast path: pyarrow casts; when anything is off, the slow path
    (`_convert_checked`) finds the first bad value and raises a DataError naming it."""
    try:
        label = pc.cast(batch.column(LABEL), pa.float64())
        dense = [pc.cast(batch.column(c), pa.float32()) for c in DENSE]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _convert_checked(batch, path, first_line)
    ok = pc.or_(pc.equal(label, 0.0), pc.equal(label, 1.0))
    if label.null_count or not pc.all(ok).as_py():
        return _convert_checked(batch, path, first_line)
    arrays = [pc.cast(label, pa.int8()), *dense, *(batch.column(c) for c in SPARSE)]
    return pa.Table.from_arrays(arrays, names=COLUMNS)


def _convert_checked(batch: pa.RecordBatch, path: Path, first_line: int) -> pa.Table:
    """The careful conversion (polars, value by value errors); raises on the first bad value."""
    df = pl.from_arrow(pa.Table.from_batches([batch]))
    assert isinstance(df, pl.DataFrame)
    label = parse_column(df[LABEL], pl.Float64, path, LABEL, first_line)
    check_range(label, 0, 1, path, LABEL, first_line)
    i = first_bad(((label != 0) & (label != 1)).fill_null(False))
    if i is not None:
        raise DataError(
            f"{path}: column 'label': expected 0 or 1, got {label[i]} (line {first_line + i})"
        )
    cols = {LABEL: label.cast(pl.Int8)}
    for c in DENSE:
        cols[c] = parse_column(df[c], pl.Float32, path, c, first_line, allow_null=True)
    table = pl.DataFrame(cols).to_arrow()
    arrays = [*table.columns, *(batch.column(c) for c in SPARSE)]
    return pa.Table.from_arrays(arrays, names=COLUMNS)


def convert(
    input_path: Path, out: Path, days: int = 1, start_date: date = date(2026, 1, 1)
) -> list[str]:
    """Convert a Criteo file into `days` consecutive partitions `<out>/day=YYYY-MM-DD/`.

    Args:
        input_path: the Criteo file (public TSV without header, or CSV with a header).
        out: output root; its day folders are replaced as a whole when the conversion succeeds.
        days: number of consecutive days to split the rows into (file order).
        start_date: date of the first day.

    Returns the partition values written, in order.
    """
    input_path = Path(input_path)
    if days < 1:
        raise DataError(f"--days {days}: expected at least 1")
    delimiter, has_header = detect_layout(input_path)
    n_rows = count_rows(input_path, has_header)
    if n_rows <= 0:
        raise DataError(f"{input_path}: file has a header but no data rows")
    if days > n_rows:
        raise DataError(f"--days {days}: more days than the {n_rows} data rows of {input_path}")
    # Day d gets rows [bounds[d], bounds[d + 1]): consecutive, sizes differ by at most one.
    bounds = (np.arange(days + 1, dtype=np.int64) * n_rows) // days  # (days + 1,)
    partition = Partition()
    row = 0
    with staged_output(Path(out), partition, replace_all=True) as staged:
        for batch in _batches(input_path, delimiter, has_header):
            table = _convert_batch(batch, input_path, first_line=row + 1 + int(has_header))
            start = 0
            while start < table.num_rows:
                d = min(int(np.searchsorted(bounds, row + start, side="right")) - 1, days - 1)
                end = int(bounds[d + 1]) if d < days - 1 else row + table.num_rows
                take = min(table.num_rows, end - row) - start
                staged.day(start_date + timedelta(days=d)).write(table.slice(start, take))
                start += take
            row += table.num_rows
        if row == 0:
            raise DataError(f"{input_path}: no data rows")
    return sorted(staged.writers)
