"""`torchrun --nproc_per_node 2 -m recsys_matta train` (gloo, CPU, TorchRec DMP) against one
process on the same three synthetic days with the same `train.batch_size=256`: it is the global
batch, so the 2-process run reads 2 x 128 rows per step and takes as many steps as one process.

Two one-process references:
- `natural`: plain `OnlineTrainer` (what `matta train` does without torchrun). Its step k trains
  on rows [256k, 256k + 256) while the 2-process step k joins rows k of each half of the day, so
  only day 1 (evaluated before any training) agrees exactly; later days differ by batch
  composition, and on the last day (2 days trained, 64 steps) agree within REL_AUC_LOSS = 2%
  relative AucLoss for every model (measured over train seeds 0-3 on these days: at most 1.2%;
  after one day up to 2.5%, after 8 steps of 2,000-row days up to 4%).
- `union`: one process whose step k trains on exactly the 2-process step-k rows (rank 0's batch
  then rank 1's). It isolates the distributed arithmetic (sharded lookups across ranks, DDP
  averaging, the pipeline; one process runs the same FBGEMM fused tables and row-wise Adagrad at
  world size 1) and must agree on every day.

The sharded run uses Adam for the dense weights: Shampoo turns float-level differences (a 2-rank
mean vs a 1-rank mean) into AucLoss differences of up to 0.01 within 16 steps (eigenbases of
near-degenerate Kronecker factors), so with Shampoo only the baseline (Adam) agrees to 1e-6 while
the MatTA model does not; with Adam every model does.

Tolerances: day 1 (both references) and day 2 against `union` agree to 6 decimals in AucLoss,
log loss and calibration (tolerance EXACT = 1e-5); on day 3 (64 steps of float-level differences)
AucLoss and log loss stay within DRIFT = 1e-4, and calibration drifts by up to 4.5e-5 on an
AVX512 CPU and 1.9e-4 on an AVX2 one (measured; CALIBRATION_DRIFT = 5e-4). Later days against
`natural`: NATURAL_TOL in AucLoss and log loss (calibration swings after a few steps and is not
compared).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_matta.data.batch import Batch
from recsys_matta.data.encode import ReadCounts
from recsys_matta.data.reader import DayReader
from recsys_matta.data.synthetic import generate
from recsys_matta.distributed.context import DistContext
from recsys_matta.distributed.state import load_full_state
from recsys_matta.errors import UserError
from recsys_matta.specs import load_spec
from recsys_matta.specs.config import DistConfig, TableShardingConfig
from recsys_matta.train.checkpoint import list_checkpoints, load_checkpoint
from recsys_matta.train.step import NonFiniteLossError
from recsys_matta.online.trainer import OnlineTrainer
from tests.tiny import REPO, SPEC_PATH, TINY, poison_student, tiny_config

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
ROWS = 8000
STEPS = 32  # per day: ceil(8000 / 256), at any world size (train.batch_size is global)
REL_AUC_LOSS = 0.02  # 2 ranks vs 1 process on the last day, relative (measured: <= 1.2%, 4 seeds)
MODELS = ("student", "ta", "baseline")
EXACT = 1e-5
OFF_SHARE = 1e-3  # baseline weights allowed off by more than DRIFT after day 2 of the resumed run
DRIFT = 1e-4  # day 3 against `union`: float differences of 64 steps
CALIBRATION_DRIFT = 5e-4  # measured 4.5e-5 (AVX512 CPU) and 1.9e-4 (AVX2 CPU)
NATURAL_TOL = {"auc_loss": 0.04, "log_loss": 0.015}
RUN = ("optim.dense=adam",)
# a constraint next to the planner's own choices (2 ranks); a column-wise split in one process
# (each column shard has its own row-wise Adagrad accumulator, so a split trains differently)
CONSTRAINTS = "dist.tables={item_id: {sharding_types: [column_wise]}, user_id: {sharding_types: [table_column_wise]}}"
SPLIT = "dist.tables={item_id: {sharding_types: [column_wise], min_partition: 8}}"


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _torchrun(spec: Path, data: Path, workdir: Path, *extra: str) -> None:  # extra: flags, overrides
    """`torchrun --standalone --nproc_per_node 2 -m recsys_matta train ...` (the CLI's flags)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [
        *launcher, "--standalone", "--nproc_per_node", "2", "-m", "recsys_matta", "train",
        "--spec", str(spec), "--data", str(data), "--workdir", str(workdir), *TINY, *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _cat(a: Batch, b: Batch) -> Batch:
    """Rows of `a` then rows of `b` (same features)."""
    ja, jb, keys = a.sparse.to_dict(), b.sparse.to_dict(), a.sparse.keys()
    sparse = KeyedJaggedTensor(
        keys=keys,
        values=torch.cat([torch.cat([ja[k].values(), jb[k].values()]) for k in keys]),
        lengths=torch.cat([torch.cat([ja[k].lengths(), jb[k].lengths()]) for k in keys]),
    )
    event = None if a.event is None else torch.cat([a.event, b.event])
    return Batch(sparse, torch.cat([a.dense, b.dense]), torch.cat([a.teacher, b.teacher]), event)


class _UnionReader:
    """One process reading what 2 ranks read: step k = rank 0's batch k + rank 1's batch k."""

    def __init__(self, spec, root: Path, per_rank: int):
        self.parts = [DayReader(spec, root, per_rank, rank=r, world_size=2) for r in (0, 1)]
        self.batch_size = 2 * per_rank

    def num_rows(self, day: str) -> int:
        return self.parts[0].num_rows(day)

    def column_kinds(self, day: str) -> dict[str, str]:
        return self.parts[0].column_kinds(day)

    def label_counts(self, day: str) -> ReadCounts:
        return self.parts[0].label_counts(day)  # the whole day, whatever the rank

    def id_counts(self, day: str) -> dict[str, ReadCounts]:
        return self.parts[0].id_counts(day)  # the whole day, whatever the rank

    def days(self) -> list[str]:
        return self.parts[0].days()

    def iter_day(self, day: str):
        for a, b in zip(*(p.iter_day(day) for p in self.parts), strict=True):
            yield _cat(a, b)

    def counts(self, day: str) -> ReadCounts:
        return self.parts[0].counts(day) + self.parts[1].counts(day)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """data root and the workdirs of the 2-process run and the two 1-process references."""
    base = tmp_path_factory.mktemp("dist")
    root = base / "data"
    generate(out=root, days=len(DAYS), rows_per_day=ROWS, seed=11, start_date=date(2026, 1, 1), progress=False)
    out = {"root": root, "world2": base / "world2", "natural": base / "natural", "union": base / "union"}
    _torchrun(SPEC_PATH, root, out["world2"], "train.batch_size=256", *RUN, CONSTRAINTS, "dist.pipeline=true")
    spec = load_spec(SPEC_PATH)
    OnlineTrainer(spec, tiny_config("train.batch_size=256", *RUN), root, out["natural"]).run(DAYS)
    union = OnlineTrainer(spec, tiny_config("train.batch_size=256", *RUN), root, out["union"])
    union.reader = _UnionReader(spec, root, 128)
    union.run(DAYS)
    return out


def _assert_same(a, b, where: str) -> None:
    """Nested dicts / lists / tensors equal exactly."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), (where, sorted(map(str, a)), sorted(map(str, b)))
        for k in b:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(b, torch.Tensor):
        assert torch.equal(a.cpu(), b.cpu()), where
    else:
        assert a == b, (where, a, b)


def _assert_metrics(got: dict, want: dict, tol: float | dict[str, float]) -> None:
    tols = tol if isinstance(tol, dict) else dict.fromkeys(("auc_loss", "log_loss", "calibration"), tol)
    for m in MODELS:
        for k, t in tols.items():
            assert abs(got[m][k] - want[m][k]) <= t, (got["day"], m, k, got[m][k], want[m][k])


@pytest.mark.integration
def test_two_processes_match_one(runs):
    r2, natural, union = (_records(runs[k]) for k in ("world2", "natural", "union"))
    assert [r["day"] for r in r2] == [r["day"] for r in natural] == [r["day"] for r in union] == DAYS
    for a, b in zip(r2, natural):
        # every row seen once, by exactly one rank, in evaluation and in training
        assert a["eval_rows"] == b["eval_rows"] == ROWS
        assert a["train_rows"] == b["train_rows"] == ROWS
        assert a["reader"]["rows_read"] == b["reader"]["rows_read"] == ROWS
        assert a["train_steps"] == b["train_steps"] == STEPS
        for m in MODELS:
            assert a[m]["rows"] == b[m]["rows"] == ROWS
    _assert_metrics(r2[0], natural[0], EXACT)  # day 1: before any training
    for a, b in zip(r2[1:], natural[1:]):
        _assert_metrics(a, b, NATURAL_TOL)
    day3 = {"auc_loss": DRIFT, "log_loss": DRIFT, "calibration": CALIBRATION_DRIFT}
    for a, b, tol in zip(r2, union, (EXACT, EXACT, day3)):  # same rows per step: same training
        _assert_metrics(a, b, tol)
    # the day's training loss is the mean over both ranks' rows (rank 0's alone is 1% off here)
    for term, v in union[0]["loss"].items():
        assert abs(r2[0]["loss"][term] - v) <= 1e-4 * max(1.0, abs(v)), (term, r2[0]["loss"][term], v)
    # training happened: day 2 is not day 1's model again (8 steps of 256 rows move the Student's
    # AucLoss by 0.008 under the default elastic rule, 0.013 with the two end points alone; the
    # models are compared to 6 decimals above, so 0.004 is far outside float noise)
    assert r2[1]["student"]["auc_loss"] < r2[0]["student"]["auc_loss"] - 0.004
    # the global batch: the same days, the same steps, the same AucLoss at 2 ranks and in 1 process
    for m in MODELS:
        got, want = r2[-1][m]["auc_loss"], natural[-1][m]["auc_loss"]
        assert abs(got / want - 1) <= REL_AUC_LOSS, (m, got, want)
    for name, r in (("2 processes x 128 rows", r2), ("1 process x 256 rows", natural)):  # for the record
        print(f"{name}: train ms/step per day", [round(1000 * d["seconds"]["train"] / d["train_steps"]) for d in r])


@pytest.mark.integration
def test_checkpoint_of_two_processes_loads_in_one(spec, runs, tmp_path):
    """The world-size-2 checkpoint of day 1 in one process (the planner's plan, and a column-wise
    split) predicts day 2 as the 2-process run did: same metrics, and identical predictions."""
    root, w2 = runs["root"], runs["world2"]
    ckpt = list_checkpoints(w2 / "checkpoints")[DAYS[0]]
    state = load_checkpoint(ckpt)
    day2 = _records(w2)[1]
    plain = OnlineTrainer(spec, tiny_config(*RUN), root, tmp_path / "plain")
    plain._load(state)
    got = plain.evaluate(DAYS[1])
    for m in MODELS:
        assert abs(got[m].auc_loss - day2[m]["auc_loss"]) <= EXACT, m
        assert abs(got[m].log_loss - day2[m]["log_loss"]) <= EXACT, m
    dmp_cfg = tiny_config(*RUN, SPLIT)
    sharded = OnlineTrainer(spec, dmp_cfg, root, tmp_path / "dmp", ctx=DistContext())
    try:
        sharded._load(load_checkpoint(ckpt))  # its own copy: optimizers adopt the loaded tensors
        batch = next(iter(plain.eval_reader.iter_day(DAYS[0])))
        with torch.no_grad():
            for a, b in zip(plain.model(batch), sharded.model(batch)):
                assert torch.allclose(a, b, atol=1e-5, rtol=0)
            assert torch.allclose(plain.baseline(batch)[0], sharded.baseline(batch)[0], atol=1e-5, rtol=0)
        # and it writes back exactly what it loaded (plain format: weights and optimizer states)
        again = sharded._state()
        for key in ("model", "optim", "baseline", "baseline_optim"):
            _assert_same(again[key], state[key], key)
    finally:
        sharded.ctx.close()


@pytest.mark.integration
def test_checkpoint_of_one_process_resumes_in_two(runs, tmp_path):
    """The reverse: 2 processes resume from the 1-process (`union`) checkpoint of day 1 and run
    day 2 as `union` did: the same day-2 evaluation (weights loaded into the shards) and, after
    training day 2, the same optimizer states (a fresh Adagrad / Adam state would move them far).

    The MatTA model's weights are not compared after training: its 32 steps amplify float noise
    (measured: perturbing the day-1 state by 1e-6 in one process moves 2.3% of user_id's weights
    and a 256x256 tower weight by 0.014 after day 2, the resumed run 1.2% and 0.004), so its
    optimizer states carry the check: Adagrad's per-table sums within 1e-3 relative (measured
    <= 8e-5; a fresh state is 12.5% off) and Adam's second moments within 2% (measured 0.18%;
    fresh: 400%). The baseline (an MLP) does not amplify the noise and is compared weight by
    weight."""
    root, union = runs["root"], runs["union"]
    w = tmp_path / "resumed"
    src = list_checkpoints(union / "checkpoints")
    (w / "checkpoints").mkdir(parents=True)
    (w / "checkpoints" / src[DAYS[0]].name).write_bytes(src[DAYS[0]].read_bytes())
    _torchrun(SPEC_PATH, root, w, "--days", DAYS[1], "train.batch_size=256", *RUN, CONSTRAINTS, "dist.pipeline=true")
    got, want = _records(w)[1], _records(union)[1]
    _assert_metrics(got, want, EXACT)
    assert got["train_rows"] == want["train_rows"] == ROWS
    a = load_checkpoint(list_checkpoints(w / "checkpoints")[DAYS[1]])
    b = load_checkpoint(src[DAYS[1]])
    assert a["step"] == b["step"] == 2 * STEPS
    for k, v in b["baseline"].items():
        off = (a["baseline"][k] - v).abs() > DRIFT
        assert off.float().mean() <= OFF_SHARE, ("baseline", k, int(off.sum()), off.numel())
    for key in ("optim", "baseline_optim"):
        for i, st in b[key]["embedding"]["state"].items():
            mine = a[key]["embedding"]["state"][i]
            assert float(mine["step"]) == float(st["step"]) == 2 * STEPS, (key, i)
            assert abs(float(mine["sum"].sum() / st["sum"].sum()) - 1) <= 1e-3, (key, "table", i)
        for i, st in b[key]["dense"]["state"].items():
            mine = a[key]["dense"]["state"][i]
            assert float(mine["step"]) == float(st["step"]) == 2 * STEPS, (key, i)
            assert abs(float(mine["exp_avg_sq"].sum() / st["exp_avg_sq"].sum()) - 1) <= 0.02, (key, "dense", i)


@pytest.mark.integration
def test_one_process_checkpoint_resumes_in_dmp(spec, runs, tmp_path):
    """A one-process checkpoint (default Shampoo) loaded into another sharding (a column-wise
    split) is written back unchanged, and resuming trains day 2 as the unsplit trainer does: the
    baseline (Adam; bitwise-stable arithmetic) predicts the same to 1e-5 only if its Adam and
    fused row-wise Adagrad states carried over (fresh ones take much larger first steps)."""
    root = runs["root"]
    OnlineTrainer(spec, tiny_config(), root, tmp_path / "first").run(DAYS[:1])
    ckpt = list_checkpoints(tmp_path / "first" / "checkpoints")[DAYS[0]]
    state = load_checkpoint(ckpt)
    plain = OnlineTrainer(spec, tiny_config(), root, tmp_path / "plain")
    dmp_cfg = tiny_config("dist.pipeline=false", SPLIT)  # the 2-process runs pipeline
    sharded = OnlineTrainer(spec, dmp_cfg, root, tmp_path / "dmp", ctx=DistContext())
    try:
        for tr in (plain, sharded):
            tr._load(load_checkpoint(ckpt))  # each its own copy: optimizers adopt the loaded tensors
        again = sharded._state()
        for key in ("model", "optim", "baseline", "baseline_optim"):
            _assert_same(again[key], state[key], key)
        for tr in (plain, sharded):
            tr.train_day(DAYS[1])
        assert sharded.step == plain.step == 2 * STEPS
        batch = next(iter(plain.eval_reader.iter_day(DAYS[1])))
        with torch.no_grad():
            assert torch.allclose(plain.baseline(batch)[0], sharded.baseline(batch)[0], atol=1e-5, rtol=0)
        fresh = OnlineTrainer(spec, tiny_config(), root, tmp_path / "fresh")
        load_full_state(fresh.baseline, state["baseline"])  # weights only, fresh optimizer states
        fresh.train_day(DAYS[1])
        with torch.no_grad():
            assert not torch.allclose(plain.baseline(batch)[0], fresh.baseline(batch)[0], atol=1e-3, rtol=0)
    finally:
        sharded.ctx.close()


@pytest.mark.integration
def test_non_finite_loss_in_dmp_keeps_the_last_checkpoint(spec, runs, tmp_path):
    root = runs["root"]
    tr = OnlineTrainer(spec, tiny_config("dist.pipeline=true", *RUN), root, tmp_path, ctx=DistContext())
    try:
        tr.run(DAYS[:1])
        ckpt = list_checkpoints(tmp_path / "checkpoints")[DAYS[0]]
        good = ckpt.read_bytes()
        poison_student(tr.model)
        with pytest.raises(NonFiniteLossError, match=f"non-finite loss on day {DAYS[1]} at step {STEPS}"):
            tr.run(DAYS[:2])
        assert list(list_checkpoints(tmp_path / "checkpoints")) == [DAYS[0]] and ckpt.read_bytes() == good
    finally:
        tr.ctx.close()


@pytest.mark.integration
def test_rank_zero_exports_plain_models_the_others_build_none(runs, tmp_path):
    """`export()` gathers the shards on rank 0, which alone builds plain models (equal to the
    sharded ones); rank 1 returns None without building a model."""
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nproc_per_node", "2", "-m", "tests.distributed.export_worker",
           str(runs["root"]), str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["exported"] and r0["baseline"] and r0["models_built"] == 2 and r0["max_diff"] <= 1e-5
    assert not r1["exported"] and r1["models_built"] == 0


def test_table_constraints():
    from recsys_matta.distributed.planning import table_constraints

    cfg = DistConfig(tables={"a": TableShardingConfig(sharding_types=["row_wise"], min_partition=4)})
    out = table_constraints(["a", "b"], cfg)
    assert (out["a"].sharding_types, out["a"].compute_kernels, out["a"].min_partition) == (["row_wise"], ["fused"], 4)
    assert (out["b"].sharding_types, out["b"].min_partition) == (cfg.sharding_types, None)
    with pytest.raises(UserError, match=r"dist.tables: unknown tables \['c'\]"):
        table_constraints(["a"], DistConfig(tables={"c": TableShardingConfig()}))


@pytest.mark.integration
def test_compiled_tower_under_two_processes(tmp_path, monkeypatch):
    """train.compile=true under torchrun (DDP at world size 2) trains as the eager run does: the
    same day-2 metrics and day-1 losses (Adam; the two end points, one graph; days of whole
    batches), and inductor did compile (its cache, a fresh folder, holds generated code)."""
    root = tmp_path / "data"
    generate(out=root, days=2, rows_per_day=2048, seed=12, start_date=date(2026, 1, 1), progress=False)
    cache = tmp_path / "inductor"
    run = (*RUN, "elastic.rule=endpoints", "baseline.enabled=false")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))  # the torchrun children's cache
    for compiled in ("false", "true"):
        _torchrun(SPEC_PATH, root, tmp_path / compiled, *run, f"train.compile={compiled}")
    assert any(cache.rglob("*.py")), "no inductor output: the tower was not compiled"
    eager, compiled = _records(tmp_path / "false"), _records(tmp_path / "true")
    assert [r["day"] for r in compiled] == ["2026-01-01", "2026-01-02"]
    for term, v in eager[0]["loss"].items():
        assert abs(compiled[0]["loss"][term] - v) <= 1e-5 * max(1.0, abs(v)), term
    for m in ("student", "ta"):
        for k in ("auc_loss", "log_loss"):
            assert abs(compiled[1][m][k] - eager[1][m][k]) <= EXACT, (m, k, compiled[1][m][k], eager[1][m][k])
    assert compiled[1]["student"]["auc_loss"] < compiled[0]["student"]["auc_loss"]  # it trained
