"""The study's figures, built in the study process from the jobs' checkpoints and metrics:

* `mixnmatch_from_checkpoint`: load the MatTA+Shampoo run's checkpoint of the second-to-last
  day (model AND the same run's baseline) and score every extracted sub-network on the last day
  (`mixnmatch_report`: table + frontier.png, dense params vs AucLoss, baseline marked). Neither
  model has seen the last day, as in progressive validation.
* `preconditioner_heatmap`: rebuild the run's optimizer from its newest checkpoint and draw
  Shampoo's Kronecker factors L (out x out) and R (in x in) of the first nested MLP layer with
  the Student block outlined (paper Figure 4).
* `plot_arm_curves`: AucLoss per day of every arm / model (mean over seeds), the scored last
  half shaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.config import RunConfig

_ARM_COLORS = {
    "baseline": "tab:gray",
    "shampoo_only": "tab:green",
    "matta_adam": "tab:orange",
    "matta_shampoo": "tab:blue",
    "matta_shampoo_noshare": "tab:purple",
    "matta_shampoo_nested_init": "tab:red",
    "ta_alone": "tab:brown",
}


def _checkpoint(run_dir: Path, spec: FeatureSpec, day: str | None) -> tuple[dict, str]:
    """The checkpoint of `day` (None = the newest day) of a job, and its day."""
    from recsys_matta.data.partitions import parse_day
    from recsys_matta.errors import UserError
    from recsys_matta.train.checkpoint import list_checkpoints, load_checkpoint

    ckpts = list_checkpoints(Path(run_dir) / "checkpoints")
    if day is None:
        if not ckpts:
            raise UserError(f"{run_dir}: no checkpoints")
        day = max(ckpts, key=lambda d: parse_day(d, spec))
    if day not in ckpts:
        raise UserError(f"{run_dir}: no checkpoint of {day} (kept: {sorted(ckpts)})")
    return load_checkpoint(ckpts[day]), day


def _eval_label(cfg: RunConfig) -> str:
    return cfg.eval_label


def mixnmatch_from_checkpoint(
    run_dir: Path, spec: FeatureSpec, cfg: RunConfig, data: Path, days: list[str], out_dir: Path
) -> dict:
    """Mix'n'Match of the run (config `cfg`) trained through `days[-2]`, scored on `days[-1]`."""
    from recsys_matta.jobs.mixnmatch import mixnmatch_report
    from recsys_matta.models import MatTAModel

    state, trained = _checkpoint(run_dir, spec, days[-2])
    if cfg.single_tower:
        from recsys_matta.errors import UserError

        raise UserError(f"{run_dir}: a Student-only run has no TA to extract from")
    model = MatTAModel(spec, cfg.model, student_only=cfg.student_only, ta_alone=cfg.ta_alone)
    model.load_state_dict(state["model"])
    baseline = None
    if state.get("baseline") is not None:
        baseline = MatTAModel(spec, cfg.model, student_only=True)
        baseline.load_state_dict(state["baseline"])
    report = mixnmatch_report(
        model, baseline, spec, Path(data), [days[-1]], _eval_label(cfg), Path(out_dir),
        all_max=cfg.daily.mixnmatch_all_max, batch_size=cfg.train.eval_batch_size,
    )  # fmt: skip
    report["trained_through"] = trained
    return report


def first_nested_layer(model) -> tuple[str, object]:
    """(name, MNestedLinear) of the first nested dense layer of the (shared) tower."""
    i = next(i for i, b in enumerate(model.cfg.blocks) if b.kind == "dense")
    return f"tower.blocks.{i}.linear", model.tower.blocks[i].linear


def preconditioner_factors(run_dir: Path, spec: FeatureSpec, cfg: RunConfig) -> dict:
    """Shampoo's factors of the first nested MLP layer at the newest checkpoint of a run
    (config `cfg`): `{"day", "layer", "factors": [L, R] (numpy) or None, "student_block":
    (n_out, n_in), "shape": (out, in)}`."""
    from recsys_matta.models import MatTAModel
    from recsys_matta.train.optim import Shampoo, make_dense_optimizer, split_parameters

    state, day = _checkpoint(run_dir, spec, None)
    model = MatTAModel(spec, cfg.model, student_only=cfg.student_only, ta_alone=cfg.ta_alone)
    model.load_state_dict(state["model"])
    dense = make_dense_optimizer(split_parameters(model)[1], cfg.optim)
    dense.load_state_dict(state["optim"]["dense"])
    name, layer = first_nested_layer(model)
    factors = dense.preconditioner_factors(layer.weight) if isinstance(dense, Shampoo) else None
    return {
        "day": day,
        "layer": name,
        "shape": tuple(layer.weight.shape),
        "block": None if factors is None else (factors[0].shape[0], factors[1].shape[0]),
        "student_block": (layer.out_student, layer.in_student),
        "factors": None if factors is None else [f.double().numpy() for f in factors],
    }


def block_share(mat: np.ndarray, n: int) -> float:
    """Share of the total |entries| of a square factor inside its top-left n x n block."""
    a = np.abs(mat)
    total = float(a.sum())
    return float(a[:n, :n].sum()) / total if total > 0 else math.nan


def plot_preconditioner(info: dict, path: Path) -> Path:
    """Heatmaps of |L| and |R| (log colour scale), the Student block outlined in red."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    factors = info["factors"]
    fig = Figure(figsize=(11, 5), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(factors))
    names = ["left factor L = E[G Gᵀ] (outputs)", "right factor R = E[Gᵀ G] (inputs)"]
    for ax, mat, n, title in zip(np.atleast_1d(axes), factors, info["student_block"], names):
        a = np.abs(mat)
        top = float(a.max()) if a.size and a.max() > 0 else 1.0
        im = ax.imshow(np.maximum(a, top * 1e-6), norm=LogNorm(vmin=top * 1e-4, vmax=top), cmap="viridis")
        ax.add_patch(Rectangle((-0.5, -0.5), n, n, fill=False, edgecolor="red", linewidth=1.5))
        ax.set_title(f"{title}\n{mat.shape[0]}x{mat.shape[1]}, Student block {n}x{n}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    block = info.get("block") or info["shape"]
    fig.suptitle(
        f"Shampoo factors of {info['layer']} (weight {info['shape'][0]}x{info['shape'][1]}, "
        f"first block {block[0]}x{block[1]}) after {info['day']}"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_arm_curves(
    curves: dict[str, list[float]], days: list[str], scored: list[str], path: Path, titles: dict[str, str]
) -> Path:
    """AucLoss per day, one line per `<arm>/<model>` (TA dashed), the scored days shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5), dpi=100, layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(days))
    if scored:
        ax.axvspan(days.index(scored[0]) - 0.5, len(days) - 0.5, color="0.92", label="scored (last half)")
    for key, ys in curves.items():
        arm, model = key.split("/")
        y = np.array(ys, dtype=np.float64)
        ok = np.isfinite(y)
        style = "--" if model == "ta" else "-"
        label = titles.get(arm, arm) + (" (TA)" if model == "ta" else "")
        ax.plot(x[ok], y[ok], style, marker="o", markersize=3, color=_ARM_COLORS.get(arm), label=label)
    step = max(1, math.ceil(len(days) / 12))
    ax.set_xticks(x[::step], [days[i] for i in x[::step]], rotation=30, ha="right")
    ax.set_xlabel("day")
    ax.set_ylabel("AucLoss (1 - AUC), mean over seeds")
    ax.set_title("AucLoss per day (progressive validation)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
