"""What a day's data must satisfy before the online loop trains on it (and marks it finished).

* rows: a day with no rows (no files, empty files) fails: training on nothing and recording the
  day as done would make the job say "already finished" when the data finally lands.
* loss budget (`data.max_invalid_fraction`): rows dropped for a null / out-of-range label above
  this share of the day fail it, naming the columns, the counts and the files.
* id budget (`data.ids`, per feature `data.ids_per_feature`): null ids and ids outside a
  `vocab_size` feature's vocab, as a share of the day's rows, per sparse feature: above `warn`
  a warning names the feature; above `fail` the day fails, naming the feature, its column,
  the counts and the files with the most.
* schema drift: the kind of every column the spec reads (integer, string, float, list<...>) is
  recorded on the first trained day and kept in the checkpoint; a later day whose column changed
  kind fails (an integer id and its string form hash to different embedding rows).

Every failure is a `DayDataError` (a `DataError`: the CLI prints one line and exits 2).
"""

from __future__ import annotations

import logging
from pathlib import Path

from recsys_matta.data.encoded import ReadCounts
from recsys_matta.errors import DataError
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.config import DataConfig

log = logging.getLogger(__name__)


class DayDataError(DataError):
    """A day's data cannot be trained on; the day is not marked finished."""


def check_has_rows(rows: int, day: str, folder: Path) -> None:
    if rows == 0:
        raise DayDataError(
            f"day {day}: no rows in {folder} (no Parquet files, or only empty ones); nothing is "
            f"trained and the day is not marked finished. Run the job again when its data has landed."
        )


def _worst_files(counts: ReadCounts, n: int = 3) -> str:
    worst = sorted(counts.dropped_by_file.items(), key=lambda kv: -kv[1])[:n]
    return "; ".join(f"{path}: {rows} rows" for path, rows in worst)


def check_counts(counts: ReadCounts, day: str, cfg: DataConfig) -> None:
    """The loss budget and the minimum rows of a day (after its whole-day read)."""
    read, dropped = counts.rows_read, counts.dropped
    if read and dropped / read > cfg.max_invalid_fraction:
        cols = sorted(set(counts.label_null) | set(counts.label_out_of_range))
        per_col = ", ".join(
            f"column {c!r}: {counts.label_null.get(c, 0)} null, {counts.label_out_of_range.get(c, 0)} out of range"
            for c in cols
        )
        raise DayDataError(
            f"day {day}: {dropped} of {read} rows ({100 * dropped / read:.1f}%) have an invalid label, "
            f"above data.max_invalid_fraction={cfg.max_invalid_fraction:g} ({per_col}); files: "
            f"{_worst_files(counts)}. The day is not trained. Fix the data (or the spec's label "
            f"columns), or raise data.max_invalid_fraction to train on the rest."
        )
    if counts.rows_kept < cfg.min_rows:
        raise DayDataError(
            f"day {day}: {counts.rows_kept} usable rows of {read} read, fewer than data.min_rows="
            f"{cfg.min_rows}; the day is not trained"
        )


def check_ids(per_file: dict[str, ReadCounts], day: str, spec: FeatureSpec, cfg: DataConfig, warn: bool = True) -> None:
    """The null / unknown id budget of every sparse feature on `day` (`per_file`: the day's
    files and their `id_counts`). A warning (when `warn`) above `budget.warn`, `DayDataError`
    above `budget.fail`."""
    unknown = sorted(set(cfg.ids_per_feature) - set(spec.sparse_names))
    if unknown:
        raise DataError(
            f"data.ids_per_feature names {', '.join(map(repr, unknown))}, not sparse features of "
            f"spec {spec.name!r} ({', '.join(spec.sparse_names)})"
        )
    rows = sum(c.rows_read for c in per_file.values())
    if not rows:
        return
    for f in spec.sparse:
        budget = cfg.id_budget(f.name)
        bad = {path: c.sparse_null.get(f.name, 0) + c.sparse_oov.get(f.name, 0) for path, c in per_file.items()}
        total = sum(bad.values())
        share = total / rows
        if share <= budget.warn:
            continue
        nulls = sum(c.sparse_null.get(f.name, 0) for c in per_file.values())
        what = (
            f"feature {f.name!r} (column {f.source!r}): {total} null or unknown ids in {rows} rows "
            f"({100 * share:.1f}%: {nulls} null, {total - nulls} outside the vocab)"
        )
        key = "data.ids_per_feature." + f.name if f.name in cfg.ids_per_feature else "data.ids"
        if share > budget.fail:
            worst = sorted(((n, p) for p, n in bad.items() if n), reverse=True)[:3]
            files = "; ".join(f"{p}: {n}" for n, p in worst)
            raise DayDataError(
                f"day {day}: {what}, above {key}.fail={budget.fail:g}; files: {files}. The day is "
                f"not trained. Fix the data, or raise {key}.fail (e.g. "
                f"data.ids_per_feature.{f.name}.fail=...) if the feature is often empty by nature."
            )
        if warn:
            log.warning("day %s: %s, above %s.warn=%g (fails above %g)", day, what, key, budget.warn, budget.fail)


def check_drift(recorded: dict | None, kinds: dict[str, str], day: str) -> None:
    """`recorded` = `{"day": first trained day, "columns": {column: kind}}` (None: nothing yet)."""
    if not recorded:
        return
    changed = {c: (k0, kinds[c]) for c, k0 in recorded["columns"].items() if c in kinds and kinds[c] != k0}
    if changed:
        what = "; ".join(f"column {c!r} was {a} on {recorded['day']}, is {b} on {day}" for c, (a, b) in sorted(changed.items()))
        raise DayDataError(
            f"day {day}: column types changed since the first trained day ({what}). Hashed ids of "
            f"another type land in other embedding rows, so the day is not trained. Write the "
            f"column with its original type, or start a new run (another --workdir)."
        )
