"""Nothing runs from a file the job loads, and one job per work directory (issue 20)."""

from __future__ import annotations

import pytest

from recsys_matta.cli import main
from tests.planted import plant
from tests.tiny import SPEC_PATH, TINY

pytestmark = pytest.mark.integration


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
