"""The job's console: one line per event (gate decisions included), MLflow's chatter left out
unless asked for (`--verbose`)."""

from __future__ import annotations

import logging
import re
import sys

import pytest

from recsys_matta.cli import main
from recsys_matta.tracking.verbosity import quiet_mlflow, registry_chatter_dropped
from tests.tiny import SPEC_PATH, TINY

pytestmark = pytest.mark.integration

MLFLOW_CHATTER = re.compile(r"INFO mlflow|Successfully registered model|Created version '|already exists\. Creating")


def test_daily_prints_one_line_per_gate_decision_and_no_mlflow_info(synthetic_root, tmp_path, capsys):
    args = ["daily", "--spec", str(SPEC_PATH), "--data", str(synthetic_root), "--workdir", str(tmp_path / "w"),
            "--days", "2026-01-01..2026-01-03", *TINY, "daily.mixnmatch=false"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    assert e.value.code == 0, out.err[-2000:]
    lines = out.out.splitlines()
    (decision,) = [ln for ln in lines if re.match(r"gate matta-student v2 ", ln)]
    # the whole decision on one line, longer than the 120-column console
    assert re.search(r"candidate AucLoss [\d.]+ vs champion [\d.]+ \(v1\) -> champion (moved|stays) \(.+\)$", decision)
    assert len(decision) > 120
    assert not any(ln.startswith(("champion moved", "champion stays", "(")) for ln in lines)
    assert [ln for ln in lines if ln.startswith("registered matta-student v")] == [
        ln for ln in lines if "registered matta-student v" in ln
    ]
    assert not MLFLOW_CHATTER.search(out.out + out.err), [
        ln for ln in (out.out + out.err).splitlines() if MLFLOW_CHATTER.search(ln)
    ]


def test_verbose_shows_mlflow_chatter_again(capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    import mlflow  # noqa: F401  (configures the mlflow logger)

    try:
        quiet_mlflow(True)
        assert logging.getLogger("mlflow").level == logging.WARNING
        with registry_chatter_dropped():
            sys.stderr.write("Created version '3' of model 'm'.\nWARNING: something else\n")
        assert capsys.readouterr().err == "WARNING: something else\n"
        quiet_mlflow(False)
        assert logging.getLogger("mlflow").level == logging.INFO
        with registry_chatter_dropped():
            sys.stderr.write("Created version '3' of model 'm'.\n")
        assert "Created version" in capsys.readouterr().err
    finally:
        quiet_mlflow(True)


def test_an_explicit_mlflow_logging_level_is_respected(monkeypatch):
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "DEBUG")
    monkeypatch.delenv("MATTA_SET_MLFLOW_LEVEL", raising=False)
    quiet_mlflow(True)
    import os

    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"
