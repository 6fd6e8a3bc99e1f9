"""The study's arms (paper Table 3 / Table 4) and how each (arm, seed) job's run config is built.

    baseline               Student alone, first-order optimizer: the trainer's built-in
                           baseline, trained ONCE per seed inside the host arm's job
                           (`matta_shampoo`), `baseline.enabled=false` everywhere else
    shampoo_only           student_only=true optim.dense=shampoo
    matta_adam             MatTA, optim.dense=adam (optim.lr = the Adam lr)
    matta_shampoo          MatTA, optim.dense=shampoo, the shipped elastic rule (Student and TA
                           reported; its Mix'n'Match sub-networks trained by `elastic`)
    matta_shampoo_endpoints  MatTA, optim.dense=shampoo, elastic.rule=endpoints: only the Student
                           and the TA trained (the paper's two-endpoint training)
    matta_shampoo_random   MatTA, optim.dense=shampoo, elastic.family=random: sandwich rule with
                           random Mix'n'Match choices instead of wide-narrow-wide ones
    matta_shampoo_noshare  MatTA, optim.dense=shampoo model.share_params=false
    matta_shampoo_nested_init  MatTA, optim.dense=shampoo model.ta_init=nested (the earlier
                           init of the shared weights, issue 12's ablation)
    ta_alone               the TA architecture alone (ta_alone=true), optim.dense=shampoo: the
                           TA-sized reference the MatTA TA is compared with

Overrides of one job, later ones win:
    study defaults (threads=1, no progress bars, 1 checkpoint kept; 2 in the host arm's job)
    -> `--quick` settings -> the user's `key=value` (every arm)
    -> the arm's defining settings -> the user's `<arm>:key=value` (that arm only)
    -> train.seed=<seed>, baseline.enabled=<host arm>
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from recsys_matta.errors import UserError

BASELINE = "baseline"


@dataclass(frozen=True)
class Arm:
    """One arm of the study.

    Args:
        name: short name (results keys, run folders).
        title: row label in the tables.
        overrides: the run-config settings that define it.
        models: the models it reports (`student`, and `ta` for MatTA arms).
        records: the record key of each of `models` in the job's metrics (None: the same names;
            a single-tower run records its model as `student`).
    """

    name: str
    title: str
    overrides: tuple[str, ...]
    models: tuple[str, ...]
    records: tuple[str, ...] | None = None

    def sources(self) -> list[tuple[str, str]]:
        """[(model name in the results, record key)]."""
        return list(zip(self.models, self.records or self.models))


ARMS: tuple[Arm, ...] = (
    Arm("shampoo_only", "Shampoo only", ("student_only=true", "optim.dense=shampoo"), ("student",)),
    Arm("matta_adam", "MatTA w/o Shampoo (Adam)", ("student_only=false", "optim.dense=adam"), ("student", "ta")),
    Arm("matta_shampoo", "MatTA w/ Shampoo", ("student_only=false", "optim.dense=shampoo"), ("student", "ta")),
    Arm(
        "matta_shampoo_endpoints",
        "MatTA w/ Shampoo, two-endpoint training",
        ("student_only=false", "optim.dense=shampoo", "elastic.rule=endpoints"),
        ("student", "ta"),
    ),
    Arm(
        "matta_shampoo_random",
        "MatTA w/ Shampoo, sandwich rule, random choices",
        ("student_only=false", "optim.dense=shampoo", "elastic.rule=sandwich", "elastic.family=random"),
        ("student", "ta"),
    ),
    Arm(
        "matta_shampoo_noshare",
        "MatTA w/ Shampoo, no parameter sharing",
        ("student_only=false", "optim.dense=shampoo", "model.share_params=false"),
        ("student", "ta"),
    ),
    Arm(
        "matta_shampoo_nested_init",
        "MatTA w/ Shampoo, nested init (fan sqrt(M_S M_TA))",
        ("student_only=false", "optim.dense=shampoo", "model.ta_init=nested"),
        ("student", "ta"),
    ),
    Arm("ta_alone", "TA alone (TA architecture, Shampoo)", ("ta_alone=true", "optim.dense=shampoo"), ("ta",), ("student",)),
)
ARM_BY_NAME = {a.name: a for a in ARMS}
BASELINE_TITLE = "Baseline (Student, first-order)"
HOST_ARM = "matta_shampoo"  # trains the baseline of each seed

STUDY_DEFAULTS = ("train.threads=1", "train.progress=false", "train.keep_checkpoints=1")
HOST_DEFAULTS = ("train.keep_checkpoints=2",)  # Mix'n'Match loads the second-to-last day
# (a study with days also keeps, in every shared-MatTA arm, the checkpoints the elastic frontier
# scores from: `job_overrides(num_days=...)`)
QUICK = (
    "preset=small",
    "train.batch_size=256",
    "train.eval_batch_size=2048",
    "train.max_batches_per_day=20",
    "optim.precondition_frequency=5",
    "loss.distill_ramp=10",
    "daily.mixnmatch_all_max=0",  # Mix'n'Match: the wide-narrow-wide sweep only
)
QUICK_SEEDS, QUICK_DAYS = 2, 3


class StudySettings(BaseModel):
    """One `matta study` invocation.

    Args:
        spec: feature spec YAML.
        data: partition root.
        days: days to run (`A..B`, a comma list; None = all).
        seeds: number of seeds (seeds 0 .. n-1).
        out: the study directory (`runs/<arm>/seed<k>/`, results, figures, mlflow.db).
        jobs: training processes run at the same time.
        quick: smoke mode: 2 seeds, the first 3 days, preset `small`, small batches.
        overrides: `key=value` run-config overrides for every arm, `<arm>:key=value` for one.
        arms: arms to run (default all; the baseline comes with the host arm `matta_shampoo`,
            or the first arm listed when it is left out).
        adam_lr: dense lr of `matta_adam` (None = the baseline's Adam lr, `baseline.optim.lr`).
        config: run config YAML applied before the overrides.
        name: dataset name in the results (None = the spec's name).
        tracking: log the study to MLflow (`<out>/mlflow.db` unless MLFLOW_TRACKING_URI).
        poll_seconds: how often the progress of running jobs is checked.
    """

    model_config = ConfigDict(extra="forbid")

    spec: Path
    data: Path
    days: str | None = None
    seeds: int = Field(3, ge=1)
    out: Path
    jobs: int = Field(2, ge=1)
    quick: bool = False
    overrides: list[str] = Field(default_factory=list)
    arms: list[str] = Field(default_factory=lambda: [a.name for a in ARMS])
    adam_lr: float | None = Field(None, gt=0)
    config: Path | None = None
    name: str | None = None
    tracking: bool = True
    poll_seconds: float = Field(2.0, gt=0)

    def selected_arms(self) -> list[Arm]:
        unknown = [a for a in self.arms if a not in ARM_BY_NAME]
        if unknown:
            raise UserError(f"--arms: unknown arm(s) {unknown}; expected some of {list(ARM_BY_NAME)}")
        if not self.arms:
            raise UserError("--arms: no arm selected")
        return [a for a in ARMS if a.name in self.arms]  # canonical order

    def host_arm(self) -> str:
        names = [a.name for a in self.selected_arms()]
        return HOST_ARM if HOST_ARM in names else names[0]

    def seed_list(self) -> list[int]:
        return list(range(QUICK_SEEDS if self.quick else self.seeds))

    def split_overrides(self) -> tuple[list[str], dict[str, list[str]]]:
        """(overrides for every arm, {arm: its own overrides})."""
        common: list[str] = []
        per_arm: dict[str, list[str]] = {}
        for item in self.overrides:
            key = item.partition("=")[0]
            if ":" in key:
                arm, _, rest = item.partition(":")
                if arm not in ARM_BY_NAME:
                    raise UserError(f"override {item!r}: unknown arm {arm!r}; expected one of {list(ARM_BY_NAME)}")
                per_arm.setdefault(arm, []).append(rest)
            else:
                common.append(item)
        return common, per_arm

    def adam_overrides(self, common: list[str]) -> list[str]:
        """`optim.lr=<adam lr>` for matta_adam (default: the resolved `baseline.optim.lr`)."""
        lr = self.adam_lr
        if lr is None:
            from recsys_matta.specs.config import resolve_config

            lr = resolve_config(self.config, [*STUDY_DEFAULTS, *common]).baseline.optim.lr
        return [f"optim.lr={lr!r}"]

    def job_overrides(self, arm: Arm, seed: int, num_days: int | None = None) -> list[str]:
        """The run-config overrides of job (arm, seed); see the module docstring. With
        `num_days`, a MatTA arm with one shared tower and the host arm keep the checkpoint of
        every day before a scored day (the elastic frontier scores from them)."""
        common, per_arm = self.split_overrides()
        fixed = list(arm.overrides)
        if arm.name == "matta_adam":
            fixed += self.adam_overrides(common)
        host = arm.name == self.host_arm()
        keep = []
        shared = "student_only=false" in arm.overrides and "model.share_params=false" not in arm.overrides
        if num_days is not None and (host or shared):
            keep = [f"train.keep_checkpoints={max(2, num_days - num_days // 2 + 1)}"]
        return [
            *STUDY_DEFAULTS,
            *(HOST_DEFAULTS if host else ()),
            *keep,
            *(QUICK if self.quick else ()),
            *common,
            *fixed,
            *per_arm.get(arm.name, []),
            f"train.seed={seed}",
            f"baseline.enabled={'true' if host else 'false'}",
        ]
