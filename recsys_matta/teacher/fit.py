"""The Teacher stage (`matta teacher fit|score`) for data with event labels only.

    fit:   earlier days -> candidates (gradient boosting on target statistics, logistic regression
           on one-hot ids), each fit on all but the last `holdout_days` days and scored (AucLoss
           on the event label) on those; the better one is refit on all the days (`refit`) and
           saved to MODEL_DIR (`teacher.joblib` + `teacher.json` with the measured AucLosses).
    score: later days -> NEW_ROOT with the same layout, every source column plus the Teacher's
           probability (`teacher_prob`, float32, in (0, 1)), streamed file by file
           (`ParquetFile.iter_batches`), each day written atomically; the source partitions are
           only read. `NEW_ROOT/spec.yaml` is the source spec with `labels.teacher` set, so the
           trainer trains on the soft labels (the event label stays for evaluation).

Inputs come from `encode_table`, the same path training and serving use (see
`teacher_features`). Fitting holds the fit rows in memory (`max_rows` caps them by a seeded
uniform sample); scoring holds one read chunk at a time.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field

from recsys_matta.data.encode import Encoded, check_schema, encode_table, needed_columns
from recsys_matta.data.partitions import day_dir, day_writer, parquet_files
from recsys_matta.errors import DataError, UserError
from recsys_matta.metrics import weighted_auc
from recsys_matta.specs import FeatureSpec, load_spec, read_yaml, validate_mapping
from recsys_matta.teacher.features import OneHotFeaturizer, TargetFeaturizer
from recsys_matta.train.checkpoint import atomic_write_text

log = logging.getLogger(__name__)

MODEL_FILE = "teacher.joblib"
REPORT_FILE = "teacher.json"
CANDIDATES = ("hgb", "logreg")
PROB_EPS = 1e-6  # probabilities are clipped to [eps, 1 - eps]: strictly inside (0, 1)


class TeacherConfig(BaseModel):
    """Teacher fitting.

    Args:
        candidates: models compared on the held-out days: `hgb` (scikit-learn
            HistGradientBoostingClassifier on categorical codes / target statistics / dense
            values) and `logreg` (L2 logistic regression on one-hot ids + dense values).
        holdout_days: the last days of the fit range, held out to compare the candidates.
        refit: refit the chosen candidate on all fit days (held-out ones included).
        max_rows: cap on fit rows (a seeded uniform sample when the days hold more).
        seed: seed of sampling, folds and the boosting's early-stopping split.
        hgb_max_iter: boosting rounds (early stopping on 10% of the rows).
        hgb_learning_rate: boosting learning rate.
        hgb_max_leaf_nodes: leaves per tree.
        hgb_l2: L2 regularisation of the leaves.
        smoothing: weight (rows) of the prior in the smoothed target means.
        logreg_c: inverse L2 strength of the logistic regression.
        logreg_max_iter: its solver iterations.
        threads: OpenMP / BLAS threads while fitting and predicting (0 = the libraries'
            default, all cores; on a shared machine more threads than free cores is much slower).
    """

    model_config = ConfigDict(extra="forbid")

    candidates: list[str] = Field(default_factory=lambda: list(CANDIDATES), min_length=1)
    holdout_days: int = Field(1, ge=1)
    refit: bool = True
    max_rows: int = Field(2_000_000, ge=100)
    seed: int = 0
    hgb_max_iter: int = Field(300, ge=1)
    hgb_learning_rate: float = Field(0.1, gt=0)
    hgb_max_leaf_nodes: int = Field(31, ge=2)
    hgb_l2: float = Field(1.0, ge=0)
    smoothing: float = Field(20.0, ge=0)
    logreg_c: float = Field(1.0, gt=0)
    logreg_max_iter: int = Field(300, ge=1)
    threads: int = Field(1, ge=0)


# ------------------------------------------------------------------------------- reading
def day_files(root: Path, spec: FeatureSpec, day: str) -> list[Path]:
    folder = day_dir(root, spec.partition, day)
    files = parquet_files(folder)  # the reader's listing
    if not files:
        raise DataError(f"{folder}: no parquet files for day {day}")
    return files


def select_days(root: Path, spec: FeatureSpec, expr: str) -> list[str]:
    """Days of `root` selected by `A..B` / `A,B` (the reader's syntax)."""
    from recsys_matta.data.reader import DayReader

    return DayReader(spec, root, 1).select_days(expr)


def load_encoded(
    spec: FeatureSpec, root: Path, days: list[str], max_rows: int | None = None, seed: int = 0
) -> Encoded:
    """The encoded rows of `days` with valid labels (a seeded uniform sample of about
    `max_rows` when there are more)."""
    files = [f for d in days for f in day_files(root, spec, d)]
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    keep = 1.0 if not max_rows or total <= max_rows else max_rows / total
    rng = np.random.default_rng(seed)
    parts, cols = [], needed_columns(spec, labels=True)
    for f in files:
        pf = pq.ParquetFile(f)
        check_schema(spec, pf.schema_arrow, str(f))
        for rb in pf.iter_batches(batch_size=65_536, columns=cols):
            enc = encode_table(spec, rb, str(f), check=False)
            if keep < 1.0:
                enc = enc.take(np.flatnonzero(rng.random(enc.num_rows) < keep))
            if enc.num_rows:
                parts.append(enc)
    if not parts:
        raise DataError(f"{root}: no rows with valid labels in {', '.join(days)}")
    return Encoded.concat(parts)


def _event(spec: FeatureSpec, enc: Encoded) -> np.ndarray:
    if enc.event is None:
        raise UserError(f"spec {spec.name!r} has no event label (labels.event): the Teacher fits on events")
    return enc.event.astype(np.float64)


# ------------------------------------------------------------------------------- the model
@dataclass
class TeacherModel:
    """A fitted Teacher: featurizer + scikit-learn estimator.

    Args:
        kind: `hgb` or `logreg`.
        features: the spec's features it was fit on (`model_dump` of each), checked at scoring.
        featurizer: turns `Encoded` rows into the estimator's inputs.
        estimator: the fitted classifier.
    """

    kind: str
    features: list[dict]
    featurizer: TargetFeaturizer | OneHotFeaturizer
    estimator: object

    def predict(self, enc: Encoded, threads: int = 1) -> np.ndarray:
        """(B,) float32 click probabilities in [eps, 1 - eps]."""
        if enc.num_rows == 0:
            return np.zeros(0, dtype=np.float32)
        with _threads(threads):
            p = self.estimator.predict_proba(self.featurizer.transform(enc))[:, 1]  # type: ignore[attr-defined]
        return np.clip(p, PROB_EPS, 1.0 - PROB_EPS).astype(np.float32)

    def check_spec(self, spec: FeatureSpec, source: str) -> None:
        have = [f.model_dump(mode="json") for f in spec.features]
        if have != self.features:
            names = [f["name"] for f in self.features]
            diff = next(
                (h.get("name") for h, w in zip(have, self.features) if h != w),
                "number of features",
            )
            raise UserError(
                f"{source}: the Teacher was fit on features {names}; spec {spec.name!r} differs "
                f"(first difference: {diff})"
            )


def _threads(n: int):
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n) if n > 0 else nullcontext()


def _fit(kind: str, spec: FeatureSpec, enc: Encoded, cfg: TeacherConfig) -> TeacherModel:
    y = _event(spec, enc)
    features = [f.model_dump(mode="json") for f in spec.features]
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        feat = TargetFeaturizer(spec, smoothing=cfg.smoothing, seed=cfg.seed)
        x = feat.fit_transform(enc, y)
        est = HistGradientBoostingClassifier(
            max_iter=cfg.hgb_max_iter,
            learning_rate=cfg.hgb_learning_rate,
            max_leaf_nodes=cfg.hgb_max_leaf_nodes,
            l2_regularization=cfg.hgb_l2,
            categorical_features=feat.categorical_mask,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=20,
            random_state=cfg.seed,
        )
    elif kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        feat = OneHotFeaturizer(spec)
        x = feat.fit_transform(enc, y)
        est = LogisticRegression(C=cfg.logreg_c, max_iter=cfg.logreg_max_iter)
    else:
        raise UserError(f"unknown Teacher candidate {kind!r}; expected one of {', '.join(CANDIDATES)}")
    with warnings.catch_warnings(), _threads(cfg.threads):
        warnings.simplefilter("ignore")  # ConvergenceWarning: the held-out AucLoss is the judge
        est.fit(x, y.astype(np.int64))
    return TeacherModel(kind, features, feat, est)


def fit_teacher(
    spec_path: Path, data_root: Path, days_expr: str, out_dir: Path, cfg: TeacherConfig | None = None
) -> dict:
    """Fit, compare and save the Teacher (see the module docstring); returns the report that
    `teacher.json` holds."""
    cfg = cfg or TeacherConfig()
    spec = load_spec(spec_path)
    if spec.labels.event is None:
        raise UserError(f"{spec_path}: spec {spec.name!r} has no event label (labels.event) to fit a Teacher on")
    days = select_days(Path(data_root), spec, days_expr)
    if len(days) <= cfg.holdout_days:
        raise UserError(
            f"--days {days_expr}: {len(days)} day(s); the Teacher needs more than holdout_days="
            f"{cfg.holdout_days} (the last ones are held out to compare the candidates)"
        )
    train_days, hold_days = days[: -cfg.holdout_days], days[-cfg.holdout_days :]
    enc_train = load_encoded(spec, data_root, train_days, cfg.max_rows, cfg.seed)
    enc_hold = load_encoded(spec, data_root, hold_days, cfg.max_rows, cfg.seed + 1)
    y_hold = _event(spec, enc_hold)
    measured: dict[str, dict] = {}
    for kind in cfg.candidates:
        t0 = time.perf_counter()
        model = _fit(kind, spec, enc_train, cfg)
        auc_loss = 1.0 - weighted_auc(model.predict(enc_hold, cfg.threads), y_hold)
        measured[kind] = {"holdout_auc_loss": auc_loss, "fit_seconds": round(time.perf_counter() - t0, 2)}
        log.info("teacher candidate %s: held-out AucLoss %.5f", kind, auc_loss)
    finite = {k: v["holdout_auc_loss"] for k, v in measured.items() if np.isfinite(v["holdout_auc_loss"])}
    if not finite:
        raise DataError(f"held-out days {hold_days}: AucLoss undefined (one class only?)")
    chosen = min(finite, key=finite.get)
    final = _fit(chosen, spec, Encoded.concat([enc_train, enc_hold]) if cfg.refit else enc_train, cfg)
    report = {
        "chosen": chosen,
        "candidates": measured,
        "train_days": train_days,
        "holdout_days": hold_days,
        "refit_on_all_days": cfg.refit,
        "fit_days": days if cfg.refit else train_days,
        "rows": {"train": enc_train.num_rows, "holdout": enc_hold.num_rows},
        "spec": spec.name,
        "config": cfg.model_dump(),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{MODEL_FILE}.tmp"
    joblib.dump(final, tmp)
    tmp.replace(out_dir / MODEL_FILE)
    atomic_write_text(out_dir / REPORT_FILE, json.dumps(report, indent=2))
    return report


def load_teacher(model_dir: Path) -> tuple[TeacherModel, dict]:
    model_dir = Path(model_dir)
    path = model_dir / MODEL_FILE
    if not path.is_file():
        raise UserError(f"{model_dir}: no {MODEL_FILE} (run `matta teacher fit` first)")
    model = joblib.load(path)
    report_path = model_dir / REPORT_FILE
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return model, report


# ------------------------------------------------------------------------------- scoring
def scored_spec(spec_path: Path, column: str) -> dict:
    """The source spec's YAML mapping with `labels.teacher: <column>`."""
    data = read_yaml(spec_path)
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise UserError(f"{spec_path}: expected a spec mapping with a labels section")
    data = dict(data)
    data["labels"] = {**data["labels"], "teacher": column}
    return data


def score_day(
    teacher: TeacherModel, spec: FeatureSpec, src_root: Path, out_root: Path, day: str, column: str,
    batch_rows: int = 65_536, threads: int = 1,
) -> int:  # fmt: skip
    """Write `out_root/<day>/` = the source day's rows + `column`; returns the rows written."""
    rows = 0
    with day_writer(out_root, spec.partition, day) as writer:
        for f in day_files(src_root, spec, day):
            pf = pq.ParquetFile(f)
            if column in pf.schema_arrow.names:
                raise DataError(f"{f}: column {column!r} already exists (choose another --column)")
            check_schema(spec, pf.schema_arrow, str(f), labels=False)
            for rb in pf.iter_batches(batch_size=batch_rows):
                enc = encode_table(spec, rb, str(f), labels=False, check=False)  # keeps every row
                prob = teacher.predict(enc, threads)  # (B,)
                table = pa.Table.from_batches([rb]).append_column(column, pa.array(prob, pa.float32()))
                writer.write(table)
                rows += rb.num_rows
    return rows


def score_teacher(
    model_dir: Path,
    spec_path: Path,
    data_root: Path,
    days_expr: str,
    out_root: Path,
    column: str = "teacher_prob",
    allow_overlap: bool = False,
    threads: int = 1,
) -> dict:
    """Score `days_expr` of `data_root` into `out_root` (see the module docstring)."""
    teacher, report = load_teacher(model_dir)
    spec = load_spec(spec_path)
    teacher.check_spec(spec, str(model_dir))
    data_root, out_root = Path(data_root), Path(out_root)
    if out_root.resolve() == data_root.resolve():
        raise UserError(f"--out {out_root} is the source root: the source partitions are never written")
    if spec.labels.teacher is not None:
        raise UserError(f"{spec_path}: spec already has a Teacher label ({spec.labels.teacher!r})")
    days = select_days(data_root, spec, days_expr)
    overlap = sorted(set(days) & set(report.get("fit_days", [])))
    if overlap and not allow_overlap:
        raise UserError(
            f"days {overlap[0]}..{overlap[-1]} were used to fit the Teacher; score later days "
            f"(or pass --allow-overlap)"
        )
    new_spec = scored_spec(spec_path, column)
    validate_mapping(FeatureSpec, new_spec, f"{spec_path} + labels.teacher={column}")
    out_root.mkdir(parents=True, exist_ok=True)
    rows = {d: score_day(teacher, spec, data_root, out_root, d, column, threads=threads) for d in days}
    # the spec last: a NEW_ROOT with a spec.yaml has all its days
    header = f"# {spec.name} with Teacher soft labels ({column}) from {model_dir} ({teacher.kind})\n"
    atomic_write_text(out_root / "spec.yaml", header + yaml.safe_dump(new_spec, sort_keys=False))
    summary = {"days": days, "rows": rows, "teacher": teacher.kind, "model_dir": str(model_dir), "column": column}
    atomic_write_text(out_root / "teacher_scoring.json", json.dumps(summary, indent=2))
    return summary
