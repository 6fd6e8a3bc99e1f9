import json
import math

import pytest
import torch

from recsys_matta.errors import UserError
from recsys_matta.train.checkpoint import list_checkpoints, load_checkpoint
from recsys_matta.train.records import read_records
from recsys_matta.train.step import NonFiniteLossError
from recsys_matta.online.trainer import OnlineTrainer
from tests.tiny import DAYS, poison_student, tiny_config


def _trainer(spec, root, workdir, *extra, **kw):
    return OnlineTrainer(spec, tiny_config(*extra), root, workdir, **kw)


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _crash_on(trainer, day, step_in_day):
    """Make `trainer` raise KeyboardInterrupt at its `step_in_day`-th step of `day`."""
    orig = trainer.engine.train

    def train(batches, first_step, d):
        for i, res in enumerate(orig(batches, first_step, d)):
            if d == day and i + 1 == step_in_day:
                raise KeyboardInterrupt("simulated crash")
            yield res

    trainer.engine.train = train


def _assert_same_state(a: dict, b: dict, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0), k


def test_progressive_validation_and_records(spec, synthetic_root, tmp_path):
    tr = _trainer(spec, synthetic_root, tmp_path)
    evaluated_at_step = []
    orig = tr.evaluate

    def spy(day):
        evaluated_at_step.append(tr.step)
        return orig(day)

    tr.evaluate = spy
    out = tr.run(DAYS)
    steps = [r.train_steps for r in out]
    # each day is evaluated before any of its training steps
    assert evaluated_at_step == [0, steps[0], steps[0] + steps[1]]
    recs = _records(tmp_path)
    assert [r["day"] for r in recs] == DAYS
    for r in recs:
        for m in ("student", "ta", "baseline"):
            assert set(r[m]) >= {"auc_loss", "log_loss", "calibration", "rows"}
            assert r[m]["rows"] == 1500
        assert math.isfinite(r["student_rel_improvement"]) and math.isfinite(r["ta_rel_improvement"])
        assert r["train_rows"] == 1500
        assert {"total", "student", "ta", "distill", "baseline"} <= set(r["loss"])
        assert r["reader"]["rows_read"] == 1500


def test_checkpoint_round_trip(spec, synthetic_root, tmp_path):
    a = _trainer(spec, synthetic_root, tmp_path)
    a.run(DAYS[:1])
    b = _trainer(spec, synthetic_root, tmp_path)
    b._restore_before(None)
    ea, eb = a.engine.state_dict(), b.engine.state_dict()
    _assert_same_state(ea["model"], eb["model"])
    _assert_same_state(ea["baseline"], eb["baseline"])
    assert b.step == a.step and b.done_days == DAYS[:1]
    sa, sb = ea["optim"], eb["optim"]
    assert sa["dense"]["steps"] == sb["dense"]["steps"] == a.step
    assert torch.equal(torch.get_rng_state(), load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[DAYS[0]])["rng"]["torch"])


def test_crash_resume_equals_uninterrupted_run(spec, synthetic_root, tmp_path):
    full = _trainer(spec, synthetic_root, tmp_path / "full")
    full.run(DAYS)

    crashed = _trainer(spec, synthetic_root, tmp_path / "crash")
    _crash_on(crashed, DAYS[2], 3)
    with pytest.raises(KeyboardInterrupt):
        crashed.run(DAYS)
    assert [r["day"] for r in _records(tmp_path / "crash")] == DAYS[:2]

    resumed = _trainer(spec, synthetic_root, tmp_path / "crash")
    out = resumed.run(DAYS)
    assert [r.day for r in out] == [DAYS[2]]
    _assert_same_state(full.engine.state_dict()["model"], resumed.engine.state_dict()["model"], atol=1e-6)
    for ra, rb in zip(_records(tmp_path / "full"), _records(tmp_path / "crash")):
        for m in ("student", "ta", "baseline"):
            assert ra[m]["auc_loss"] == pytest.approx(rb[m]["auc_loss"], abs=1e-6)


def test_rerun_is_a_noop_and_force_redoes_the_day(spec, synthetic_root, tmp_path):
    _trainer(spec, synthetic_root, tmp_path).run(DAYS[:2])
    ckpt = list_checkpoints(tmp_path / "checkpoints")[DAYS[1]]
    mtime = ckpt.stat().st_mtime_ns
    before = _records(tmp_path)
    assert _trainer(spec, synthetic_root, tmp_path).run(DAYS[:2]) == []
    assert ckpt.stat().st_mtime_ns == mtime and _records(tmp_path) == before

    redo = _trainer(spec, synthetic_root, tmp_path, force=True).run([DAYS[1]])
    assert [r.day for r in redo] == [DAYS[1]]
    assert redo[0].student.auc_loss == pytest.approx(before[1]["student"]["auc_loss"], abs=1e-6)
    assert [r["day"] for r in _records(tmp_path)] == DAYS[:2]


def test_going_back_in_time_without_force_is_an_error(spec, synthetic_root, tmp_path):
    _trainer(spec, synthetic_root, tmp_path).run([DAYS[1]])
    with pytest.raises(UserError, match="before the last finished day"):
        _trainer(spec, synthetic_root, tmp_path).run([DAYS[0]])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(spec, synthetic_root, tmp_path):
    tr = _trainer(spec, synthetic_root, tmp_path)
    tr.run(DAYS[:1])
    ckpt = list_checkpoints(tmp_path / "checkpoints")[DAYS[0]]
    good = ckpt.read_bytes()
    poison_student(tr.model)
    with pytest.raises(NonFiniteLossError, match=f"non-finite loss .* day {DAYS[1]}"):
        tr.run(DAYS[:2])
    assert list(list_checkpoints(tmp_path / "checkpoints")) == [DAYS[0]]
    assert ckpt.read_bytes() == good
    assert [r["day"] for r in _records(tmp_path)] == DAYS[:1]


def test_student_only_run_has_no_ta(spec, synthetic_root, tmp_path):
    out = _trainer(spec, synthetic_root, tmp_path, "student_only=true", "optim.dense=adam").run(DAYS[:1])
    assert out[0].ta is None and out[0].ta_rel_improvement is None
    assert set(out[0].loss) == {"total", "student", "baseline"}
    line = _records(tmp_path)[0]
    assert "ta" not in line and "ta_rel_improvement" not in line
    assert read_records(tmp_path) == out


def test_frozen_baseline_from_checkpoint(spec, synthetic_root, tmp_path):
    _trainer(spec, synthetic_root, tmp_path / "a").run(DAYS[:1])
    ckpt = list_checkpoints(tmp_path / "a" / "checkpoints")[DAYS[0]]
    tr = _trainer(spec, synthetic_root, tmp_path / "b", f"baseline.checkpoint={ckpt}")
    before = {k: v.clone() for k, v in tr.baseline.state_dict().items()}
    tr.run(DAYS[1:2])
    _assert_same_state(before, tr.baseline.state_dict())
    _assert_same_state(load_checkpoint(ckpt)["baseline"], before)


def test_max_batches_per_day_caps_training_and_counts_the_whole_day(spec, synthetic_root, tmp_path):
    out = _trainer(spec, synthetic_root, tmp_path, "train.max_batches_per_day=2").run(DAYS[:1])
    # 1500 rows in ceil(1500 / 256) = 6 near-equal batches of 250 rows
    assert out[0].train_steps == 2 and out[0].train_rows == 500
    assert out[0].reader["rows_read"] == 1500 and out[0].eval_rows == 1500


def test_a_batch_whose_rows_all_have_invalid_labels_is_skipped(spec, synthetic_root, tmp_path):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    src = sorted((synthetic_root / f"day={DAYS[0]}").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in src])
    null_first = pa.array([None] * 300 + [0.0] * (table.num_rows - 300), pa.float32())
    teacher = pc.if_else(pc.is_null(null_first), null_first, table["teacher_prob"])
    table = table.set_column(table.schema.get_field_index("teacher_prob"), "teacher_prob", teacher)
    (tmp_path / "data" / f"day={DAYS[0]}").mkdir(parents=True)
    pq.write_table(table, tmp_path / "data" / f"day={DAYS[0]}" / "part-00000.parquet")
    # 1500 rows in 6 batches of 250: the first batch loses every row (null Teacher label)
    out = _trainer(spec, tmp_path / "data", tmp_path / "w", "data.max_invalid_fraction=0.25").run(DAYS[:1])
    assert out[0].train_rows == 1200 and out[0].train_steps == 5
    assert out[0].reader["label_null_dropped"] == 300 and out[0].eval_rows == 1200
