"""Teacher inputs built from the shared encode path (`encode_table` -> `Encoded`), so the Teacher
sees exactly the ids and dense values the trained models see.

Two featurizers, one per Teacher candidate:

* `TargetFeaturizer` (for gradient boosting): a dense matrix, one block per feature:
    - single-valued sparse feature whose table has <= `CATEGORICAL_MAX` rows: its id, used as a
      categorical column (NaN when the row has no id);
    - any other sparse feature (hashed ids, multi-valued bags): the smoothed target mean of its
      ids `(sum_y + m * prior) / (count + m)` and `log1p(count)` on the fit rows (the mean over
      the bag for multi-valued features, plus the bag length). Fit rows get out-of-fold
      statistics (`folds` random folds), so a row's own label never leaks into its features;
    - dense features as encoded (transform + normalisation; trees do not care).
* `OneHotFeaturizer` (for logistic regression): a sparse CSR one-hot of every id (table offset
  + id; multi-valued bags weighted `1 / len`, the model's mean pooling) plus the dense columns.

Everything is vectorised numpy / scipy over whole encoded chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys_matta.data.encode import Encoded
from recsys_matta.specs import FeatureSpec, SparseFeature

CATEGORICAL_MAX = 255  # HistGradientBoosting accepts at most max_bins (255) categories


def feature_bags(enc: Encoded) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sparse feature (spec order): `(ids (nnz_f,) int64, lengths (B,) int64)`."""
    nf, b = len(enc.keys), enc.num_rows
    lengths = enc.lengths.reshape(nf, b).astype(np.int64)  # (F, B)
    ends = np.cumsum(lengths.sum(axis=1))
    starts = ends - lengths.sum(axis=1)
    return [(enc.values[s:e], lengths[f]) for f, (s, e) in enumerate(zip(starts, ends))]


def _row_of(lengths: np.ndarray) -> np.ndarray:
    """(nnz,) row index of every id of a feature with per-row `lengths` (B,)."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def _bag_mean(values: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(B,) mean of `values` (nnz,) per row; NaN for empty rows."""
    sums = np.bincount(rows, weights=values, minlength=len(lengths))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lengths > 0, sums / np.maximum(lengths, 1), np.nan)


def is_categorical(f: SparseFeature) -> bool:
    return not f.multi_valued and f.num_embeddings <= CATEGORICAL_MAX


@dataclass
class TargetFeaturizer:
    """Categorical codes / target statistics / dense columns (see the module docstring).

    Args:
        spec: the feature spec.
        smoothing: m, the prior's weight (in rows) in the smoothed target mean.
        folds: out-of-fold folds for the statistics of the fit rows.
        seed: seed of the fold assignment.
    """

    spec: FeatureSpec
    smoothing: float = 20.0
    folds: int = 5
    seed: int = 0
    prior: float = 0.5
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # feature -> (rows,) label sums
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # feature -> (rows,) occurrences

    @property
    def columns(self) -> list[str]:
        out = []
        for f in self.spec.sparse:
            if is_categorical(f):
                out.append(f.name)
            else:
                out += [f"{f.name}:target_mean", f"{f.name}:log_count"]
                if f.multi_valued:
                    out.append(f"{f.name}:length")
        return out + [f.name for f in self.spec.dense]

    @property
    def categorical_mask(self) -> np.ndarray:
        """(n_columns,) bool: which columns are categorical codes."""
        mask = []
        for f in self.spec.sparse:
            mask += [True] if is_categorical(f) else [False] * (3 if f.multi_valued else 2)
        return np.array(mask + [False] * len(self.spec.dense), dtype=bool)

    def fit_transform(self, enc: Encoded, y: np.ndarray) -> np.ndarray:
        """Fit the statistics on `enc` with labels `y` (B,); returns its (B, n_columns) matrix
        with out-of-fold statistics."""
        y = np.asarray(y, dtype=np.float64)
        self.prior = float(y.mean()) if len(y) else 0.5
        fold = np.random.default_rng(self.seed).integers(0, self.folds, size=enc.num_rows)  # (B,)
        for f, (ids, lengths) in zip(self.spec.sparse, feature_bags(enc)):
            if is_categorical(f):
                continue
            rows = _row_of(lengths)
            self.sums[f.name] = np.bincount(ids, weights=y[rows], minlength=f.num_embeddings)
            self.counts[f.name] = np.bincount(ids, minlength=f.num_embeddings).astype(np.float64)
        return self._matrix(enc, fold=fold, y=y)

    def transform(self, enc: Encoded) -> np.ndarray:
        """(B, n_columns) float32 matrix with the statistics of all fit rows."""
        return self._matrix(enc)

    def _target_mean(self, s: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Smoothed mean; NaN (missing) for an unseen id when `smoothing` is 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (s + self.smoothing * self.prior) / (c + self.smoothing)

    def _stats(
        self, name: str, ids: np.ndarray, rows: np.ndarray, fold: np.ndarray | None, y: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(nnz,) target mean and count of every id; out-of-fold when `fold` is given."""
        sums, counts = self.sums[name], self.counts[name]
        if fold is None:
            return self._target_mean(sums[ids], counts[ids]), counts[ids]
        assert y is not None
        te = np.empty(len(ids), dtype=np.float64)
        cnt = np.empty(len(ids), dtype=np.float64)
        id_fold = fold[rows]  # (nnz,)
        for k in range(self.folds):
            sel = id_fold == k
            ids_k = ids[sel]
            s_k = np.bincount(ids_k, weights=y[rows[sel]], minlength=len(sums))
            c_k = np.bincount(ids_k, minlength=len(sums)).astype(np.float64)
            te[sel] = self._target_mean(sums[ids_k] - s_k[ids_k], counts[ids_k] - c_k[ids_k])
            cnt[sel] = counts[ids_k] - c_k[ids_k]
        return te, cnt

    def _matrix(self, enc: Encoded, fold: np.ndarray | None = None, y: np.ndarray | None = None) -> np.ndarray:
        cols: list[np.ndarray] = []
        for f, (ids, lengths) in zip(self.spec.sparse, feature_bags(enc)):
            rows = _row_of(lengths)
            if is_categorical(f):
                code = np.full(enc.num_rows, np.nan)
                code[rows] = ids  # single-valued: at most one id per row
                cols.append(code)
                continue
            te, cnt = self._stats(f.name, ids, rows, fold, y)
            cols.append(_bag_mean(te, rows, lengths))
            cols.append(_bag_mean(np.log1p(cnt), rows, lengths))
            if f.multi_valued:
                cols.append(lengths.astype(np.float64))
        cols += list(enc.dense.T.astype(np.float64))
        return np.stack(cols, axis=1).astype(np.float32)  # (B, n_columns)


@dataclass
class OneHotFeaturizer:
    """Sparse one-hot ids (mean-pooled bags) + dense columns, for a linear model. Only the id
    columns seen in the fit rows are kept (an unseen id contributes nothing, as an id with a
    zero weight would), so the model's size follows the data, not the hash space.

    Args:
        spec: the feature spec.
    """

    spec: FeatureSpec
    remap: np.ndarray | None = None  # (all columns,) kept column index, -1 = dropped

    @property
    def offsets(self) -> np.ndarray:
        """(F + 1,) first column of each sparse feature; the dense columns follow the last."""
        return np.concatenate([[0], np.cumsum([f.num_embeddings for f in self.spec.sparse])])

    @property
    def num_columns(self) -> int:
        """Columns before dropping unseen ids."""
        return int(self.offsets[-1]) + len(self.spec.dense)

    def fit_transform(self, enc: Encoded, y: np.ndarray) -> sp.csr_matrix:
        rows, cols, vals = self._entries(enc)
        seen = np.zeros(self.num_columns, dtype=bool)
        seen[cols] = True
        seen[int(self.offsets[-1]) :] = True  # dense columns always
        self.remap = np.where(seen, np.cumsum(seen) - 1, -1)
        return self._matrix(enc.num_rows, rows, cols, vals)

    def transform(self, enc: Encoded) -> sp.csr_matrix:
        """(B, kept columns) CSR matrix (all columns before `fit_transform`)."""
        return self._matrix(enc.num_rows, *self._entries(enc))

    def _entries(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, value) of every non-zero, column in the full id space."""
        b, offsets = enc.num_rows, self.offsets
        rows, cols, vals = [], [], []
        for j, (ids, lengths) in enumerate(feature_bags(enc)):
            r = _row_of(lengths)
            rows.append(r)
            cols.append(ids + offsets[j])
            vals.append(1.0 / lengths[r])  # mean pooling: a bag sums to 1
        d = enc.dense.shape[1]
        rows.append(np.repeat(np.arange(b, dtype=np.int64), d))
        cols.append(np.tile(np.arange(d, dtype=np.int64) + offsets[-1], b))
        vals.append(enc.dense.astype(np.float64).ravel())  # (B * D,) row-major = (row, col) order
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)

    def _matrix(self, b: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> sp.csr_matrix:
        width = self.num_columns
        if self.remap is not None:
            cols = self.remap[cols]
            keep = cols >= 0
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
            width = int(self.remap.max()) + 1
        return sp.csr_matrix((vals, (rows, cols)), shape=(b, width))
