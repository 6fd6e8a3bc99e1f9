"""What the encoder produces: `Encoded` (one chunk of cleaned rows as numpy arrays, in KJT
layout) and `ReadCounts` (what happened to the rows), with vectorised row gather / concat."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from recsys_matta.specs import FeatureSpec


def _add_dicts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


@dataclass
class ReadCounts:
    """What happened to the rows of a chunk / day. Summable with `+`.

    Args:
        rows_read: rows in the input.
        rows_kept: rows that became model inputs (`rows_read` minus the dropped ones).
        label_null_dropped: rows dropped because a label was null or NaN.
        label_out_of_range_dropped: rows dropped because a label was outside its range.
        label_null: per label column, rows where it is null / NaN.
        label_out_of_range: per label column, rows where it is outside its range ([0, 1] for
            the Teacher, {0, 1} for the event label).
        sparse_null: per sparse feature, null ids (a null list counts once) -> fewer ids.
        sparse_oov: per `vocab_size` feature, ids outside the vocab sent to the OOV row.
        dense_filled: per dense feature, null / non-finite values replaced by the default.
        dropped_by_file: per source file, rows dropped (not logged as metrics: the keys are paths).
    Per-key dicts hold only non-zero entries.
    """

    rows_read: int = 0
    rows_kept: int = 0
    label_null_dropped: int = 0
    label_out_of_range_dropped: int = 0
    label_null: dict[str, int] = field(default_factory=dict)
    label_out_of_range: dict[str, int] = field(default_factory=dict)
    sparse_null: dict[str, int] = field(default_factory=dict)
    sparse_oov: dict[str, int] = field(default_factory=dict)
    dense_filled: dict[str, int] = field(default_factory=dict)
    dropped_by_file: dict[str, int] = field(default_factory=dict, metadata={"log": False})

    @property
    def dropped(self) -> int:
        """Rows dropped for an invalid label."""
        return self.label_null_dropped + self.label_out_of_range_dropped

    def __add__(self, other: "ReadCounts") -> "ReadCounts":
        out = ReadCounts()
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(out, f.name, _add_dicts(a, b) if isinstance(a, dict) else a + b)
        return out

    def as_dict(self) -> dict[str, int]:
        """Flat dict for logging: scalar counts, per-kind totals and `kind/key` entries."""
        out: dict[str, int] = {}
        for f in fields(self):
            if not f.metadata.get("log", True):
                continue
            v = getattr(self, f.name)
            if isinstance(v, dict):
                out[f.name] = int(sum(v.values()))
                out.update({f"{f.name}/{k}": int(n) for k, n in sorted(v.items())})
            else:
                out[f.name] = int(v)
        return out

    def summary(self) -> str:
        """One line for logs (see `summarize_counts`)."""
        return summarize_counts(self.as_dict())


def summarize_counts(d: Mapping[str, int]) -> str:
    """`ReadCounts.as_dict()` (a day record's `reader`) as one line: rows read / kept, why rows
    were dropped, dense fills, null and OOV ids."""
    parts = [f"{d.get('rows_read', 0)} rows read, {d.get('rows_kept', 0)} kept"]
    null, oor = d.get("label_null_dropped", 0), d.get("label_out_of_range_dropped", 0)
    if null or oor:
        parts.append(f"{null + oor} dropped ({null} null label, {oor} label out of range)")
    for key, what in (("dense_filled", "dense values filled"), ("sparse_null", "null ids"), ("sparse_oov", "OOV ids")):
        if d.get(key):
            parts.append(f"{d[key]} {what}")
    return ", ".join(parts)


@dataclass
class Encoded:
    """One chunk of cleaned rows as numpy arrays (B rows, F sparse features, D dense features).

    Args:
        keys: sparse feature names in spec order (the KJT keys).
        values: (sum of lengths,) int64 ids, feature-major (all ids of feature 0, then 1, ...).
        lengths: (F * B,) int32 ids per row, feature-major (KJT layout).
        dense: (B, D) float32, transforms and normalisation applied.
        teacher: (B,) float32 training label (the event label when the spec has no Teacher
            column); None when encoded with `labels=False`.
        event: (B,) float32 event label; None without an event column or with `labels=False`.
        counts: what happened to the rows.
    """

    keys: list[str]
    values: np.ndarray
    lengths: np.ndarray
    dense: np.ndarray
    teacher: np.ndarray | None
    event: np.ndarray | None
    counts: ReadCounts

    @property
    def num_rows(self) -> int:
        return int(self.dense.shape[0])

    @staticmethod
    def empty(spec: FeatureSpec, labels: bool = True) -> "Encoded":
        """Zero rows, with the arrays `encode_table(spec, ..., labels)` would give."""
        nolabel = np.zeros(0, dtype=np.float32)
        event = nolabel if labels and spec.labels.event else None
        teacher = (nolabel.copy() if spec.labels.teacher else event) if labels else None
        return Encoded(
            keys=spec.sparse_names,
            values=np.zeros(0, dtype=np.int64),
            lengths=np.zeros(0, dtype=np.int32),
            dense=np.zeros((0, len(spec.dense)), dtype=np.float32),
            teacher=teacher,
            event=event,
            counts=ReadCounts(),
        )

    def take(self, rows: np.ndarray) -> "Encoded":
        """The rows `rows` (int indices, any order) as a new `Encoded`; vectorised gather.

        `counts` of the result only hold the row numbers (the per-chunk counts stay with the
        chunk that was encoded)."""
        rows = np.asarray(rows, dtype=np.int64)  # (b,)
        nf, b = len(self.keys), len(rows)
        offsets = np.zeros(self.lengths.size + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        flat = (np.arange(nf, dtype=np.int64)[:, None] * self.num_rows + rows[None, :]).ravel()
        lengths = self.lengths[flat]  # (F*b,) feature-major
        ends = np.cumsum(lengths, dtype=np.int64)
        # position of every selected id: its bag's start, plus its index inside the bag
        pos = np.repeat(offsets[flat] - (ends - lengths), lengths) + np.arange(
            ends[-1] if lengths.size else 0, dtype=np.int64
        )
        event = None if self.event is None else self.event[rows]
        teacher = event if self.teacher is self.event else (
            None if self.teacher is None else self.teacher[rows]
        )
        return Encoded(
            keys=self.keys,
            values=self.values[pos],
            lengths=lengths,
            dense=self.dense[rows],
            teacher=teacher,
            event=event,
            counts=ReadCounts(rows_read=b, rows_kept=b),
        )

    @staticmethod
    def concat(parts: list["Encoded"]) -> "Encoded":
        """Rows of `parts` one after the other (same keys); counts are summed."""
        if len(parts) == 1:
            return parts[0]
        keys, nf = parts[0].keys, len(parts[0].keys)
        value_parts: list[np.ndarray] = []
        per_part = []
        for p in parts:
            lengths = p.lengths.reshape(nf, p.num_rows)  # (F, B_p)
            offsets = np.zeros(nf + 1, dtype=np.int64)
            np.cumsum(lengths.sum(axis=1), out=offsets[1:])
            per_part.append((lengths, offsets))
        for f in range(nf):
            value_parts += [p.values[o[f] : o[f + 1]] for p, (_, o) in zip(parts, per_part)]
        event = None if parts[0].event is None else np.concatenate([p.event for p in parts])
        shared = parts[0].teacher is parts[0].event
        teacher = event if shared else (
            None if parts[0].teacher is None else np.concatenate([p.teacher for p in parts])
        )
        counts = ReadCounts()
        for p in parts:
            counts = counts + p.counts
        return Encoded(
            keys=keys,
            values=np.concatenate(value_parts) if value_parts else np.zeros(0, np.int64),
            lengths=np.concatenate([ln for ln, _ in per_part], axis=1).ravel(),
            dense=np.concatenate([p.dense for p in parts]),
            teacher=teacher,
            event=event,
            counts=counts,
        )
