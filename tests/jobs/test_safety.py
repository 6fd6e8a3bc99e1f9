"""Nothing runs from a file the job loads, and one job per work directory (issue 20)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_matta.cli import main
from recsys_matta.jobs.lock import try_lock, workdir_lock
from tests.planted import plant
from tests.tiny import SPEC_PATH, TINY

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _train(data, workdir, *extra):
    return ["train", "--spec", str(SPEC_PATH), "--data", str(data), "--workdir", str(workdir), *extra, *TINY]


def test_matta_train_refuses_a_planted_checkpoint(synthetic_root, tmp_path, capsys):
    marker = tmp_path / "marker"
    bad = plant(tmp_path / "wd" / "checkpoints" / "day=2026-01-01.pt", marker)
    with pytest.raises(SystemExit) as e:
        main(_train(synthetic_root, tmp_path / "wd", "--days", "2026-01-02"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad}: refused to load a checkpoint" in err and "would run code" in err
    assert not marker.exists()


_HOLDER = """
import sys, time
from recsys_matta.jobs.lock import workdir_lock
with workdir_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _hold(workdir):
    """A second process holding `workdir`'s lock through the project's lock function."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(workdir)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("command", ["daily", "train", "register"])
def test_a_second_job_on_a_locked_workdir_exits_2_naming_the_holder(synthetic_root, tmp_path, capsys, command):
    workdir = tmp_path / "wd"
    holder = _hold(workdir)
    try:
        common = ["--spec", str(SPEC_PATH), "--data", str(synthetic_root), "--workdir", str(workdir)]
        args = {
            "daily": ["daily", *common, "--day", "2026-01-01", *TINY],
            "train": _train(synthetic_root, workdir, "--days", "2026-01-01"),
            "register": ["register", *common, *TINY],
        }[command]
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"PID {holder.pid}" in err and "another job is running on this work directory" in err
        assert not (workdir / "checkpoints").exists() and not (workdir / "mlflow.db").exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_when_the_holder_dies(tmp_path):
    holder = _hold(tmp_path)
    fd, who = try_lock(tmp_path)
    assert fd is None and f"PID {holder.pid}" in who
    holder.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
    holder.wait()
    with workdir_lock(tmp_path):  # the kernel dropped the lock; the stale file does not block
        fd, who = try_lock(tmp_path)
        assert fd is None and f"PID {os.getpid()}" in who  # held by this process now
    fd, _ = try_lock(tmp_path)
    assert fd is not None
    os.close(fd)


def test_a_workdir_that_cannot_be_locked_is_a_user_error_naming_the_lock_file(tmp_path):
    """An OS error taking the lock (here: the workdir's parent is a file) is a UserError (exit 2
    from the CLI) naming `<workdir>/.lock`, not a raw OSError."""
    from recsys_matta.errors import UserError

    (tmp_path / "file").write_text("x")
    workdir = tmp_path / "file" / "wd"
    with pytest.raises(UserError, match=r"file/wd/\.lock: cannot take the work directory's lock"):
        with workdir_lock(workdir):
            pass
