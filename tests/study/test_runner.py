"""Job bookkeeping of the study runner (no training here; see test_study_quick)."""

import json

import pytest

from recsys_matta.errors import UserError
from recsys_matta.study.runner import Job, check_identity, done_days, is_finished, run_jobs
from tests.records import day_record


def _job(tmp_path, overrides=("train.seed=0",), days=("2026-01-01", "2026-01-02")):
    return Job("matta_shampoo", 0, "s.yaml", "data", None, str(tmp_path / "run"), tuple(days), tuple(overrides))


def test_finished_jobs_are_skipped_without_starting_a_worker(tmp_path):
    job = _job(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(day_record("2026-01-01").to_json() + "\n")
    assert done_days(job.workdir) == ["2026-01-01"] and not is_finished(job)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write(day_record("2026-01-02", 1).to_json() + "\n")
    assert is_finished(job)
    lines = []
    (out,) = run_jobs([job], parallel=2, echo=lines.append)
    assert out.status == "skipped" and lines == ["finished already, skipped: matta_shampoo/seed0"]
    assert json.loads((tmp_path / "run" / "job.json").read_text())["overrides"] == ["train.seed=0"]


def test_resuming_with_other_settings_is_an_error(tmp_path):
    check_identity(_job(tmp_path))
    check_identity(_job(tmp_path, overrides=("train.seed=0", "optim.lr=0.2")))  # no day done yet: fine
    (tmp_path / "run" / "metrics.jsonl").write_text(day_record("2026-01-01").to_json() + "\n")
    check_identity(_job(tmp_path, overrides=("train.seed=0", "optim.lr=0.2"), days=("2026-01-01", "2026-01-03")))
    with pytest.raises(UserError, match="changed: overrides"):
        check_identity(_job(tmp_path, overrides=("train.seed=0", "optim.lr=0.1")))
