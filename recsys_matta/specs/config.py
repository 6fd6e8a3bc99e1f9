"""Run configuration: typed, validated, loaded from YAML plus dotted `key=value` overrides.

`preset` picks a base `ModelConfig` (recsys_matta.specs.presets); `model.*` keys override it.
Unknown keys are errors that name the key and the source (file or override).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys_matta.errors import UserError
from recsys_matta.specs.loading import SpecError, read_yaml, validate_mapping
from recsys_matta.specs.model import ModelConfig
from recsys_matta.specs.presets import PRESETS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LossConfig(_Strict):
    """MatTA loss `ω_S L_S + ω_TA L_TA + ramp(t) ω_D L_D` (docs/architecture.md section 6, "The loss").

    Args:
        w_student: ω_S, weight of BCE(student, label).
        w_ta: ω_TA, weight of BCE(TA, label).
        w_distill: ω_D, weight of BCE(student, stopgrad(TA)).
        distill_delay: steps with the distillation term off.
        distill_ramp: steps over which its weight then rises linearly from 0 to 1.
        label: training label, the Teacher's soft label (`teacher`) or the event (`event`).
    """

    w_student: float = Field(1.0, ge=0)
    w_ta: float = Field(1.0, ge=0)
    w_distill: float = Field(1.0, ge=0)
    distill_delay: int = Field(0, ge=0)
    distill_ramp: int = Field(300, ge=0)
    label: Literal["teacher", "event"] = "teacher"


class ElasticConfig(_Strict):
    """Elastic (Mix'n'Match) training: besides the Student and the TA, each step trains
    `samples` sampled sub-networks of the nested TA (docs/architecture.md section 6, "Elastic training").

        L += weight * mean_c [ BCE(logit_c, y) + ramp(t) w_distill BCE(logit_c, stopgrad σ(logit_TA)) ]

    Args:
        rule: `sandwich` (the Student and the TA, the smallest and the largest, plus the sampled
            sub-networks, each distilled in place from the TA) or `endpoints` (the Student and
            the TA only: the two-endpoint training of the paper). Applies to a shared MatTA
            model; a single-tower model or `share_params=false` has no sub-networks to sample.
        family: where the samples come from: `wide_narrow_wide` (K drawn from 1 .. units-1, the
            served family) or `random` (each unit wide or narrow at random, never all one way).
        samples: sub-networks per step (distinct where the family allows).
        weight: weight of the samples' mean loss.
        w_distill: weight of each sample's distillation term (under the Student's ramp).
    """

    rule: Literal["sandwich", "endpoints"] = "sandwich"
    family: Literal["wide_narrow_wide", "random"] = "wide_narrow_wide"
    samples: int = Field(1, ge=1)
    weight: float = Field(1.0, ge=0)
    w_distill: float = Field(1.0, ge=0)


class OptimConfig(_Strict):
    """Optimizers of one model (the MatTA model: `optim`; the baseline: `baseline.optim`).

    Args:
        dense: optimizer of dense (non-embedding) parameters: `shampoo` (heavyball SOAP:
            Shampoo's Kronecker-factored eigenbasis with Adam grafted in it), `adam` or `adagrad`.
        lr: dense learning rate.
        betas: Adam / SOAP (β1, β2).
        weight_decay: decoupled weight decay of dense parameters.
        epsilon: ε of the second-moment denominator.
        precondition_frequency: steps between recomputations of Shampoo's eigenbasis.
        start_preconditioning_step: steps run with plain Adam (the grafting method) before Shampoo
            preconditioning starts.
        max_preconditioner_dim: largest side of a preconditioned block; a larger weight is cut into
            blocks of this size (never left unpreconditioned). 256: with the `small` and `default`
            presets on the synthetic spec every Student block lies inside its weight's first
            block, so it is preconditioned jointly with the TA entries around it (paper Figure 4),
            and a cheaper step than 1024 (the same AucLoss within seed noise; docs/results.md);
            the step's cost is linear in it (a block r x c costs r*c*(r+c) per rotation). 128
            cuts the default Student block of blocks.1 (128 x 192) in two: the optimizer step
            0.77x, but +0.0008 Student AucLoss on the 8 x 50k study (3 of 3 seeds). Wider
            Students (the `large` preset, specs with many features) have their Student block cut
            into blocks too.
        shampoo_beta: EMA factor of the Kronecker factor statistics (per step: an update every
            `factor_every` steps decays them by shampoo_beta ** factor_every).
        factor_every: steps between updates of Shampoo's Kronecker factors (`batched` only; 1:
            every step). Their two products per block are a third of the step's matmuls, but
            skipping gradients costs AucLoss: on the 8 x 50k study `factor_every=5` is +0.0011
            Student AucLoss (3 of 3 seeds worse), `factor_every=2` +0.0004 (3 of 3); opt-in
            (docs/tuning.md).
        rotation_dtype: dtype of the per-step rotations into and out of the eigenbasis (`batched`
            only): `auto` (the default: `bfloat16` where the device multiplies bf16 faster than
            float32, CUDA from Ampere and CPUs with AVX512-BF16 or AMX; `float32` elsewhere),
            `float32` (the weights' dtype) or `bfloat16` (blocks with both sides >= 64; factors,
            moments and weights stay float32).
        factor_dtype: dtype of the factor products G G^T and G^T G (`batched` only; `auto`, the
            default, as above): bf16 products added into float32 factors; only the eigenbasis
            chosen at a refresh depends on them. Both bf16 (on AVX512-BF16): the optimizer step
            0.70x the float32 one, the same AucLoss within seed noise on the 8 x 50k study (6
            seeds; docs/tuning.md).
        shampoo_impl: `batched` (recsys_matta.train.shampoo: blocks of one shape updated with
            batched matmuls) or `heavyball` (heavyball's SOAP, the reference implementation).
        embedding_lr: learning rate of row-wise Adagrad on the embedding tables.
        embedding_eps: ε of row-wise Adagrad.
    """

    dense: Literal["shampoo", "adam", "adagrad"] = "shampoo"
    lr: float = Field(3e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    epsilon: float = Field(1e-8, gt=0)
    precondition_frequency: int = Field(20, ge=1)
    start_preconditioning_step: int = Field(0, ge=0)
    max_preconditioner_dim: int = Field(256, ge=1)
    shampoo_beta: float = Field(0.95, ge=0, lt=1)
    factor_every: int = Field(1, ge=1)
    rotation_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    factor_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    shampoo_impl: Literal["batched", "heavyball"] = "batched"
    embedding_lr: float = Field(0.05, gt=0)
    embedding_eps: float = Field(1e-8, gt=0)


def _baseline_optim() -> "OptimConfig":
    return OptimConfig(dense="adam", lr=1e-3, betas=(0.9, 0.999))


class BaselineConfig(_Strict):
    """The production baseline: the Student architecture alone, trained on the same stream in
    the same run (or loaded from a checkpoint and frozen), with its OWN optimizer settings
    (nothing is inherited from `optim`).

    Args:
        enabled: train / evaluate a baseline.
        optim: its optimizers (default: Adam lr 1e-3, betas (0.9, 0.999), no weight decay on
            the dense weights; row-wise Adagrad on the tables).
        checkpoint: load the baseline's weights from this trainer checkpoint and keep them
            frozen, instead of training it.
    """

    enabled: bool = True
    optim: OptimConfig = Field(default_factory=_baseline_optim)
    checkpoint: str | None = None


class IdBudget(_Strict):
    """The budget of null / unknown ids of a sparse feature on one day, as a share of the day's
    rows: null ids (a null single id, a null list, a null element of a list) plus, for
    `vocab_size` features, ids outside the vocab (sent to the OOV row).

    Args:
        warn: above this share the job logs a warning naming the feature (and trains).
        fail: above this share the day fails (not trained, not marked finished), naming the
            feature, its column, the counts and the files with the most.
    """

    warn: float = Field(0.01, ge=0)
    fail: float = Field(0.2, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "IdBudget":
        if self.warn > self.fail:
            raise ValueError(f"warn ({self.warn}) must not exceed fail ({self.fail})")
        return self


class DataConfig(_Strict):
    """What the online loop accepts from a day's data.

    Args:
        max_invalid_fraction: largest share of a day's rows that may be dropped (null or
            out-of-range labels) before the day fails instead of training on the rest.
        min_rows: fewest rows (after dropping) a day must have to be trained and marked done.
        ids: the null / unknown id budget of every sparse feature (warn 1%, fail 20%).
        ids_per_feature: feature name -> its own budget, replacing `ids` for that feature
            (features that are often empty by nature, e.g. Criteo's C19..C26).
    """

    max_invalid_fraction: float = Field(0.01, ge=0, le=1)
    min_rows: int = Field(1, ge=1)
    ids: IdBudget = Field(default_factory=IdBudget)
    ids_per_feature: dict[str, IdBudget] = Field(default_factory=dict)

    def id_budget(self, feature: str) -> IdBudget:
        return self.ids_per_feature.get(feature, self.ids)


Precision = Literal["float32", "bfloat16"]  # train.precision; TrainStep checks against the same values


class TrainConfig(_Strict):
    """The online loop.

    Args:
        batch_size: GLOBAL training batch size: the rows of one step over all ranks together.
            Each rank reads `batch_size / world_size` rows per step (`per_rank_batch`), so a run
            takes the same number of steps, and every step-counted schedule (distillation ramp,
            Shampoo refreshes, grafting steps) means the same, at any world size; it must be
            divisible by the world size.
        eval_batch_size: rows per forward of the progressive-validation pass on each rank
            (memory only: evaluation does not depend on it).
        shuffle_buffer: rows of the bounded within-day shuffle buffer (0 = file order).
        seed: seed of initialisation, shuffling and everything random.
        device: `cpu`, `cuda` or `auto`.
        eval_label: label of the reported metrics (`auto` = the training label).
        max_batches_per_day: cap on training batches per day (smoke tests); None = the whole day.
        keep_checkpoints: per-day checkpoints kept (the newest; >= 2 so `--force` can redo a day).
        progress: progress bars on long work.
        threads: torch intra-op threads; 0 = auto: this process's share of the cores
            (`cpu_count / processes on the node`) minus the reader's two background threads, at
            least 1. (torch's default, one thread per core, fights the reader's threads and any
            other process for the cores: 20x slower steps measured on a shared 2-core machine.)
        compile: `torch.compile` the shared tower's forward (and so its backward) in the
            training step; evaluation stays eager. Opt-in: 0.83x the eager step (Student + TA,
            Adam) and 0.88x (the shipped elastic step, Shampoo) at batch 256 on CPU, but each
            new set of sub-network widths costs a compile on first use in a process (17-37 s
            on CPU, 5 graphs for the wide-narrow-wide family with one sample; the on-disk
            inductor cache makes later processes cheaper); families with more combinations
            than torch._dynamo's recompile limit run the rest eager (docs/tuning.md).
        precision: `bfloat16` runs the MatTA model's forward in the training step under
            `torch.autocast` (bf16 matmuls; norms, the loss, weights, gradients and optimizer
            state float32); the baseline, evaluation and serving stay float32. Opt-in, for
            GPUs and CPUs with fast bf16 (AMX); docs/tuning.md has its speed and AucLoss.
    """

    batch_size: int = Field(256, ge=1)
    eval_batch_size: int = Field(8192, ge=1)
    shuffle_buffer: int = Field(0, ge=0)
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    eval_label: Literal["auto", "teacher", "event"] = "auto"
    max_batches_per_day: int | None = Field(None, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    progress: bool = True
    threads: int = Field(0, ge=0)
    compile: bool = False
    precision: Precision = "float32"

    def per_rank_batch(self, world_size: int) -> int:
        """Rows per step on each of `world_size` ranks (`batch_size` is the global batch)."""
        if self.batch_size % world_size:
            raise UserError(
                f"train.batch_size={self.batch_size} is the global batch (all ranks together) and "
                f"must be divisible by the world size {world_size} (per-rank batch = global / "
                f"world size); use e.g. train.batch_size={max(1, self.batch_size // world_size) * world_size}"
            )
        return self.batch_size // world_size


# ---- dist (issue 7): torchrun + TorchRec DistributedModelParallel ----------------------------
# data_parallel is not offered: TorchRec gives such tables the dense kernel, whose weights would
# fall to the dense optimizer (Shampoo); every table steps with FBGEMM's fused row-wise Adagrad.
ShardingTypeName = Literal["table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise"]


class TableShardingConfig(_Strict):
    """Planner constraints of one embedding table (None = the `dist` defaults).

    Args:
        sharding_types: sharding types the planner may choose for this table.
        min_partition: narrowest column shard the planner may cut for column-wise sharding
            (None = TorchRec's default; a divisor of the table's dim to force a split). Each
            column shard keeps its own row-wise Adagrad accumulator (FBGEMM), so a split table
            trains slightly differently from an unsplit one.
    """

    sharding_types: list[ShardingTypeName] | None = Field(None, min_length=1)
    min_partition: int | None = Field(None, ge=1)


class DistConfig(_Strict):
    """TorchRec DistributedModelParallel, in one process and under `torchrun`
    (recsys_matta.distributed.sharded): the tables' sharding and the step pipeline.

    Args:
        sharding_types: sharding types the planner may choose for every table (TorchRec's names;
            all with the fused kernel). On CPU the planner offers table_wise / column_wise /
            table_column_wise; row_wise needs a GPU.
        tables: per-table overrides, keyed by table name (a feature's `table`, else its name).
        pipeline: train with TorchRec's `TrainPipelineSparseDist` (on GPUs the input all-to-all
            and copy of the next batch overlap this batch's compute); `auto` = on GPUs only (on
            CPU nothing overlaps: measured slower); false = one synchronous step per batch.
    """

    sharding_types: list[ShardingTypeName] = Field(
        default_factory=lambda: ["table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise"],
        min_length=1,
    )
    tables: dict[str, TableShardingConfig] = Field(default_factory=dict)
    pipeline: Literal["auto"] | bool = "auto"

    @model_validator(mode="before")
    @classmethod
    def _drop_sharded(cls, data: Any) -> Any:
        """`dist.sharded` (auto | always) chose between plain modules and DMP in one process;
        every world size runs DMP now. Configs stored in older checkpoints still load."""
        if isinstance(data, dict) and "sharded" in data:
            data = {k: v for k, v in data.items() if k != "sharded"}
        return data


# ---- end dist --------------------------------------------------------------------------------


class DailyConfig(_Strict):
    """The daily pipeline (`matta daily`): registration, the champion gate, Mix'n'Match.

    Args:
        register_student: register the Student of every finished day (alias `candidate`) and,
            before training each day, gate the previous candidate against the champion on it.
        mixnmatch: write the Mix'n'Match report after the last day.
        mixnmatch_all_max: also score every choice (not only wide-narrow-wide) when there are at
            most this many.
    """

    register_student: bool = True
    mixnmatch: bool = True
    mixnmatch_all_max: int = Field(64, ge=0)


class TrackingConfig(_Strict):
    """Talking to an MLflow tracking server over HTTP (not the embedded sqlite store).

    A server that stops answering fails the job within about
    `(http_retries + 1) * http_timeout_s` plus the backoff (1, 2, 4, ... s) instead of MLflow's
    defaults (7 retries, 120 s each: minutes). `MLFLOW_HTTP_REQUEST_MAX_RETRIES` /
    `MLFLOW_HTTP_REQUEST_TIMEOUT` in the environment take precedence.

    Args:
        http_retries: retries of a failed request.
        http_timeout_s: seconds one request may take.
    """

    http_retries: int = Field(3, ge=0, le=10)
    http_timeout_s: int = Field(20, ge=1)


class RunConfig(_Strict):
    """Everything a training run needs besides the spec and the data.

    Args:
        preset: base model preset (`small`, `default`, `large`); `model.*` keys override it.
        student_only: train the Student alone (no TA, no distillation): the "Shampoo only" and
            production arms of the ablations.
        ta_alone: train the TA's architecture alone (its tables, tower and TA-only blocks; no
            Student, no distillation): the TA-sized reference of the study.
        model: model architecture (after the preset).
        loss: loss weights and schedule.
        elastic: elastic training of the Mix'n'Match sub-networks (the sampling rule).
        optim: optimizers of the trained model.
        baseline: the production baseline trained alongside (its own optimizer settings).
        data: what the online loop accepts from a day (loss budget for dropped rows).
        train: the online loop.
        dist: multi-process (torchrun) sharding and pipelining.
        daily: the daily pipeline (registration, gate, Mix'n'Match).
        tracking: how long a tracking server may take to answer before the job fails.
        experiment: MLflow experiment name.
        registered_model: MLflow registered model name of the Student.
    """

    preset: str = "default"
    student_only: bool = False
    ta_alone: bool = False
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    elastic: ElasticConfig = ElasticConfig()
    optim: OptimConfig = OptimConfig()
    baseline: BaselineConfig = BaselineConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    dist: DistConfig = DistConfig()
    daily: DailyConfig = DailyConfig()
    tracking: TrackingConfig = TrackingConfig()

    @property
    def eval_label(self) -> str:
        """The label metrics and the gate are against: `train.eval_label`, `auto` = the training
        label (`loss.label`). The one place this rule is written."""
        return self.loss.label if self.train.eval_label == "auto" else self.train.eval_label
    experiment: str = "matta"
    registered_model: str = "matta-student"

    @model_validator(mode="after")
    def _checks(self) -> "RunConfig":
        if self.student_only and self.ta_alone:
            raise ValueError("student_only and ta_alone exclude each other")
        if not self.model.share_params and (self.student_only or self.ta_alone):
            raise ValueError("share_params=False needs a MatTA model (student_only=false, ta_alone=false)")
        return self

    @property
    def single_tower(self) -> bool:
        """One model, no TA output and no distillation (`student_only` or `ta_alone`)."""
        return self.student_only or self.ta_alone


def _set_dotted(data: dict, key: str, value: object, source: str) -> None:
    """`a.b.c=value` into nested dicts; an integer part indexes a list (`model.blocks.1.width`)."""
    parts = key.split(".")
    node: dict | list = data
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise SpecError(f"{source}: {key}: {p!r} is not an index of a list of {len(node)}")
            if last:
                node[int(p)] = value
                return
            node = node[int(p)]
        else:
            if last:
                node[p] = value
                return
            child = node.setdefault(p, {})
            if not isinstance(child, (dict, list)):
                raise SpecError(f"{source}: {key}: {p!r} is not a section")
            node = child


def parse_overrides(items: list[str] | tuple[str, ...]) -> list[tuple[str, object]]:
    """`["optim.lr=0.01", "model.d_model=[8,16]"]` -> [("optim.lr", 0.01), ...] (YAML values)."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"override {item!r}: expected key=value (e.g. optim.lr=0.01)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def resolve_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
) -> RunConfig:
    """YAML file (optional) + `base` dict + dotted overrides -> validated RunConfig.

    The preset (from the file or an override) is the base of `model`; the file's `model` keys
    replace the preset's, then the overrides apply (so `model.blocks.0.expansion=[16,64]` edits
    one block of the preset)."""
    data: dict = copy.deepcopy(base) if base else {}
    source = "run config"
    if path is not None:
        loaded = read_yaml(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SpecError(f"{path}: expected a mapping at the top level")
        data.update(loaded)
        source = str(path)
    pairs = parse_overrides(list(overrides))
    preset = next((v for k, v in reversed(pairs) if k == "preset"), data.get("preset", "default"))
    if preset not in PRESETS:
        raise SpecError(f"{source}: preset: unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise SpecError(f"{source}: model: expected a mapping")
    data["model"] = {**PRESETS[preset].model_dump(mode="json"), **model}
    for key, value in pairs:
        _set_dotted(data, key, value, "override")
    baseline = data.get("baseline")
    if isinstance(baseline, dict) and isinstance(baseline.get("optim"), dict):
        # `baseline.optim.lr=...` keeps the baseline's own defaults for the other keys
        baseline["optim"] = {**_baseline_optim().model_dump(), **baseline["optim"]}
    return validate_mapping(RunConfig, data, source + (" + overrides" if overrides else ""))
