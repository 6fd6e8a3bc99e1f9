"""The daily job as a scheduler runs it (one `matta daily` per day, data landing day by day) and
on bad data: nothing lost silently, every failure one clear line and a non-zero exit (issue 11)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from recsys_matta.cli import main
from recsys_matta.train.checkpoint import list_checkpoints, load_checkpoint
from tests.http_server import free_port, stop, wait_healthy
from tests.tiny import DAYS, REPO, SPEC_PATH, TINY

pytestmark = pytest.mark.integration

QUIET = [*TINY, "daily.mixnmatch=false"]
NO_REGISTRY = [*QUIET, "daily.register_student=false"]


def _land(src: Path, dst: Path, day: str) -> Path:
    """Copy one day's partition into `dst` (the data "lands")."""
    shutil.copytree(src / f"day={day}", dst / f"day={day}")
    return dst / f"day={day}"


def _table(folder: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])


def _rewrite(folder: Path, table: pa.Table) -> Path:
    for f in folder.glob("*.parquet"):
        f.unlink()
    pq.write_table(table, folder / "part-00000.parquet")
    return folder / "part-00000.parquet"


def _daily(capsys, data: Path, work: Path, day: str, *extra: str, spec: Path = SPEC_PATH) -> tuple[int, str, str]:
    """One `matta daily --day` invocation in this process: (exit code, stdout, stderr)."""
    args = ["daily", "--spec", str(spec), "--data", str(data), "--workdir", str(work), "--day", day]
    with pytest.raises(SystemExit) as e:
        main([*args, *extra])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _client(work: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{work / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _done(work: Path) -> list[str]:
    path = work / "metrics.jsonl"
    return [json.loads(x)["day"] for x in path.read_text().splitlines()] if path.exists() else []


def test_delayed_gate_judges_yesterdays_candidate_on_todays_data(synthetic_root, tmp_path, capsys):
    from recsys_matta.jobs.scoring import score_pyfunc
    from recsys_matta.specs import load_spec
    from recsys_matta.tracking.registry import load_version
    from recsys_matta.tracking.tracker import configure_mlflow

    data, work = tmp_path / "data", tmp_path / "run"
    outs = []
    for day in DAYS:
        _land(synthetic_root, data, day)
        code, out, err = _daily(capsys, data, work, day, *QUIET)
        assert code == 0, err
        outs.append(out)
    # day 2: the only version is the champion, and the run says there is nothing to judge
    assert f"gate matta-student on {DAYS[1]}: nothing to judge (the candidate v1 is the champion already)" in outs[1]
    assert f"gate matta-student v2 (trained through {DAYS[1]}) on {DAYS[2]}: candidate AucLoss" in outs[2]
    c = _client(work)
    versions = {int(v.version): v for v in c.search_model_versions("name='matta-student'")}
    assert sorted(versions) == [1, 2, 3] and [versions[v].tags["day"] for v in (1, 2, 3)] == DAYS
    assert versions[1].tags["gate.reason"].startswith("no champion yet")
    # v2 (trained through DAYS[1]) was judged by the DAYS[2] run, against v1, on DAYS[2]
    v2 = versions[2].tags
    assert v2["gate.day"] == DAYS[2] and v2["gate.champion_version"] == "1"
    configure_mlflow(work)
    spec = load_spec(SPEC_PATH)
    cand = score_pyfunc(load_version("matta-student", 2), spec, data, DAYS[2], "teacher").auc_loss
    champ = score_pyfunc(load_version("matta-student", 1), spec, data, DAYS[2], "teacher").auc_loss
    assert cand != champ  # two models on a day neither trained on, not the champion against itself
    assert float(v2["gate.champion_auc_loss"]) == pytest.approx(champ, abs=1e-9)
    (run,) = [r for r in c.search_runs([r.experiment_id for r in c.search_experiments()]) if r.data.tags.get("days") == DAYS[2]]
    assert run.data.metrics["gate/candidate_auc_loss"] == pytest.approx(cand, abs=1e-9)
    champion = int(c.get_model_version_by_alias("matta-student", "champion").version)
    assert champion == (2 if cand < champ else 1) and v2["gate.moved"] == str(cand < champ).lower()
    assert "gate.day" not in versions[3].tags  # v3 waits for the next day's data
    assert int(c.get_model_version_by_alias("matta-student", "candidate").version) == 3


def test_invalid_labels_above_the_budget_fail_the_day(synthetic_root, tmp_path, capsys):
    data, work = tmp_path / "data", tmp_path / "run"
    folder = _land(synthetic_root, data, DAYS[0])
    t = _table(folder)
    nulls = pa.array([None] * 300 + [0.0] * (t.num_rows - 300), pa.float32())
    teacher = pc.if_else(pc.is_null(nulls), nulls, t["teacher_prob"])
    bad = _rewrite(folder, t.set_column(t.schema.get_field_index("teacher_prob"), "teacher_prob", teacher))
    code, _, err = _daily(capsys, data, work, DAYS[0], *NO_REGISTRY)
    assert code == 2 and "Traceback" not in err
    assert f"300 of {t.num_rows} rows (20.0%)" in err and "column 'teacher_prob': 300 null" in err and str(bad) in err
    assert not list_checkpoints(work / "checkpoints") and _done(work) == []
    # with a budget that allows it, the day trains and the counts are on the console and in MLflow
    code, out, err = _daily(capsys, data, work, DAYS[0], *NO_REGISTRY, "data.max_invalid_fraction=0.25")
    assert code == 0, err
    assert f"{DAYS[0]} | {t.num_rows} rows read, 1200 kept, 300 dropped (300 null label" in out
    c = _client(work)
    (run,) = [r for r in c.search_runs([r.experiment_id for r in c.search_experiments()]) if r.info.status == "FINISHED"]
    assert run.data.metrics["reader/label_null_dropped"] == 300 and run.data.metrics["reader/label_null/teacher_prob"] == 300


def test_swapped_label_columns_fail_instead_of_training_on_nothing(synthetic_root, tmp_path, capsys):
    data, work = tmp_path / "data", tmp_path / "run"
    _land(synthetic_root, data, DAYS[0])
    spec = yaml.safe_load(SPEC_PATH.read_text())
    spec["labels"] = {"teacher": "click", "event": "teacher_prob"}
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text(yaml.safe_dump(spec))
    code, _, err = _daily(capsys, data, work, DAYS[0], *NO_REGISTRY, spec=swapped)
    assert code == 2 and "(100.0%) have an invalid label" in err and "column 'teacher_prob': 0 null, " in err
    assert not list_checkpoints(work / "checkpoints")


def test_an_empty_day_fails_and_trains_when_its_data_lands(synthetic_root, tmp_path, capsys):
    data, work = tmp_path / "data", tmp_path / "run"
    folder = _land(synthetic_root, data, DAYS[0])
    full = _table(folder)
    _rewrite(folder, full.slice(0, 0))  # the file exists, with no rows
    code, _, err = _daily(capsys, data, work, DAYS[0], *NO_REGISTRY)
    assert code == 2 and f"day {DAYS[0]}: no rows in {folder}" in err and "Traceback" not in err
    for f in folder.glob("*.parquet"):
        f.unlink()  # no file at all
    code, _, err = _daily(capsys, data, work, DAYS[0], *NO_REGISTRY)
    assert code == 2 and "no rows" in err
    folder.rmdir()  # no folder for the day
    code, _, err = _daily(capsys, data, work, DAYS[0], *NO_REGISTRY)
    assert code == 2 and f"day {DAYS[0]} not found under {data} (no folder {folder.name})" in err
    assert "not marked finished" in err and "Traceback" not in err
    assert not list_checkpoints(work / "checkpoints") and _done(work) == []
    folder.mkdir()
    _rewrite(folder, full)
    code, out, err = _daily(capsys, data, work, DAYS[0], *NO_REGISTRY)
    assert code == 0 and "already finished" not in out and _done(work) == [DAYS[0]]


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(synthetic_root, tmp_path, capsys):
    work = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["daily", "--spec", str(SPEC_PATH), "--data", str(synthetic_root), "--workdir", str(work),
              "--days", f"{DAYS[0]}..{DAYS[1]}", *NO_REGISTRY])  # fmt: skip
    assert e.value.code == 0
    capsys.readouterr()
    newest = list_checkpoints(work / "checkpoints")[DAYS[1]]
    newest.write_bytes(newest.read_bytes()[:1000])
    code, out, err = _daily(capsys, synthetic_root, work, DAYS[1], *NO_REGISTRY, "--force")
    assert code == 0, err
    assert f"{newest}: unreadable checkpoint" in err and "falling back to" in err and "move the unreadable file" in err
    assert load_checkpoint(newest)["done_days"] == DAYS[:2]  # rewritten, readable again
    for p in list_checkpoints(work / "checkpoints").values():
        p.write_bytes(b"junk")
    code, _, err = _daily(capsys, synthetic_root, work, DAYS[2], *NO_REGISTRY)
    assert code == 2 and f"no readable checkpoint in {work / 'checkpoints'}" in err and str(newest) in err
    assert "Traceback" not in err


def test_an_id_column_that_changes_type_fails_the_day(synthetic_root, tmp_path, capsys):
    data, work = tmp_path / "data", tmp_path / "run"
    _land(synthetic_root, data, DAYS[0])
    assert _daily(capsys, data, work, DAYS[0], *NO_REGISTRY)[0] == 0
    folder = _land(synthetic_root, data, DAYS[1])
    t = _table(folder)
    ids = pc.cast(t["user_id"], pa.string())
    _rewrite(folder, t.set_column(t.schema.get_field_index("user_id"), "user_id", ids))
    code, _, err = _daily(capsys, data, work, DAYS[1], *NO_REGISTRY)
    assert code == 2 and f"column 'user_id' was integer on {DAYS[0]}, is string on {DAYS[1]}" in err
    assert _done(work) == [DAYS[0]] and list(list_checkpoints(work / "checkpoints")) == [DAYS[0]]


def test_a_skipped_day_is_refused(synthetic_root, tmp_path, capsys):
    work = tmp_path / "run"
    assert _daily(capsys, synthetic_root, work, DAYS[0], *NO_REGISTRY)[0] == 0
    code, _, err = _daily(capsys, synthetic_root, work, DAYS[2], *NO_REGISTRY)
    assert code == 2 and f"not trained ({DAYS[1]})" in err and f"--days {DAYS[1]}..{DAYS[2]}" in err


def test_one_line_per_day_while_the_job_runs_without_a_terminal(synthetic_root, tmp_path):
    cmd = [sys.executable, "-m", "recsys_matta", "daily", "--spec", str(SPEC_PATH), "--data", str(synthetic_root),
           "--workdir", str(tmp_path / "run"), "--days", f"{DAYS[0]}..{DAYS[1]}", *NO_REGISTRY]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, running_at_first_day = [], None
    for line in proc.stdout:  # a pipe: not a TTY
        lines.append(line)
        if line.startswith(f"{DAYS[0]} |") and running_at_first_day is None:
            running_at_first_day = proc.poll() is None
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err
    assert running_at_first_day, "the first day's line came only at the end"
    day_lines = [x for x in lines if x.startswith(tuple(f"{d} |" for d in DAYS))]
    assert [x.split(" |")[0] for x in day_lines] == DAYS[:2]
    for x in day_lines:
        assert "1500 rows read, 1500 kept" in x and "AucLoss student 0." in x and "ta 0." in x and "baseline 0." in x
        assert " s train" in x


def test_tests_that_need_the_shared_datasets_skip_without_them(tmp_path):
    """A fresh clone without ../shared/data: those tests are skipped with a reason (CI has it)."""
    env = {**os.environ, "MATTA_SHARED_DATA": str(tmp_path / "absent"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
           "tests/data/test_adapters.py", "tests/teacher/test_fit.py"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "failed" not in proc.stdout and " skipped" in proc.stdout
    assert f"{tmp_path / 'absent'} is absent" in proc.stdout


@pytest.mark.serving
def test_matta_serve_scores_raw_rows_without_the_venv_on_path(synthetic_root, tmp_path, capsys):
    import urllib.request

    import numpy as np

    from recsys_matta.jobs.scoring import raw_frames
    from recsys_matta.specs import load_spec
    from recsys_matta.tracking.registry import load_champion
    from recsys_matta.tracking.tracker import configure_mlflow

    work = tmp_path / "run"
    assert _daily(capsys, synthetic_root, work, DAYS[0], *QUIET)[0] == 0
    port = free_port()
    matta = Path(sys.executable).with_name("matta")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"  # cron / systemd: the venv is not activated
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(matta), "serve", "--workdir", str(work), "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log")
        spec = load_spec(SPEC_PATH)
        rows = next(raw_frames(spec, synthetic_root, DAYS[1], limit=20)).drop(columns=["teacher_prob", "click"])
        payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as r:
            served = np.asarray(json.loads(r.read())["predictions"], dtype=np.float64)
        configure_mlflow(work)
        local = np.asarray(load_champion("matta-student").predict(rows), dtype=np.float64)
        assert served.shape == (20,) and np.all((served > 0) & (served < 1))
        np.testing.assert_allclose(served, local, rtol=0, atol=1e-6)
        assert "serving models:/matta-student@champion (version 1)" in (tmp_path / "serve.log").read_text()
    finally:
        stop(proc)
        log.close()


def test_matta_serve_without_a_champion_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "has no version with alias 'champion'" in err and "Traceback" not in err


@pytest.mark.parametrize("fault", ["id_type", "null_labels"])
def test_a_failing_day_fails_before_the_gate_judges_on_it(synthetic_root, tmp_path, capsys, fault):
    data, work = tmp_path / "data", tmp_path / "run"
    for day in DAYS[:2]:
        _land(synthetic_root, data, day)
        assert _daily(capsys, data, work, day, *QUIET)[0] == 0  # v1 champion, v2 candidate
    folder = _land(synthetic_root, data, DAYS[2])
    t = _table(folder)
    if fault == "id_type":
        col, values, expected = "user_id", pc.cast(t["user_id"], pa.string()), "column 'user_id' was integer"
    else:
        n = t.num_rows // 5
        mask = pa.array([i < n for i in range(t.num_rows)])
        col, values = "teacher_prob", pc.if_else(mask, pa.scalar(None, pa.float64()), t["teacher_prob"])
        expected = f"column 'teacher_prob': {n} null, 0 out of range"
    _rewrite(folder, t.set_column(t.schema.get_field_index(col), col, values))
    code, out, err = _daily(capsys, data, work, DAYS[2], *QUIET)
    assert code == 2 and expected in err, err
    assert "gate matta-student" not in out  # nothing was scored on the day that failed
    c = _client(work)
    assert "gate.day" not in c.get_model_version("matta-student", "2").tags  # v2 still waits
    assert int(c.get_model_version_by_alias("matta-student", "champion").version) == 1
