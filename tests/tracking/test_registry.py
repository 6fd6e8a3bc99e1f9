"""The champion gate against a real sqlite model registry.

Versions are created directly (no model files): the gate only reads and moves aliases. The full
log -> register -> load path is in tests/serving/test_pyfunc.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recsys_matta.tracking import open_tracker
from recsys_matta.tracking.registry import (
    CANDIDATE,
    CHAMPION,
    alias_version,
    champion_version,
    complete_registration,
    decide,
    gate,
    load_champion,
    version_info,
    version_tags,
)

NAME = "matta-student-test"


def _new_version(tags: dict[str, str] | None = None) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.create_registered_model(NAME)
    except MlflowException:
        pass  # already there
    return int(client.create_model_version(NAME, source="file:///nowhere", tags=tags).version)


def test_decide_rule():
    assert decide(0.4, None, None, 1) == (True, "no champion yet (candidate AucLoss 0.4)")
    assert decide(0.4, 0.5, 1, 2)[0] is True
    assert decide(0.5, 0.4, 1, 2)[0] is False
    assert decide(0.4, 0.4, 1, 2) == (False, "candidate AucLoss 0.4 = champion v1 0.4 (not better)")
    assert decide(math.nan, None, None, 1)[0] is False
    assert decide(0.4, math.nan, 1, 2)[0] is True  # a champion that cannot be scored is replaced
    assert decide(0.1, 0.4, 2, 2) == (False, "version 2 is already the champion")
    with pytest.raises(ValueError, match="champion version 1 exists"):
        decide(0.4, None, 1, 2)


def test_version_tags_exact():
    assert version_tags("2026-11-03", 0.1 + 0.2, 0.5, run_id="abc") == {
        "day": "2026-11-03",
        "auc_loss": "0.30000000000000004",
        "baseline_auc_loss": "0.5",
        "run_id": "abc",
    }


def test_first_version_becomes_champion(mlflow_store):
    assert champion_version(NAME) is None
    assert load_champion(NAME) is None  # no registered model at all
    v1 = _new_version(version_tags("2026-11-01", 0.45, 0.50))
    assert load_champion(NAME) is None  # a model, but no champion alias
    decision = gate(NAME, v1, 0.45, None, day="2026-11-02")
    assert decision.moved and decision.champion_version is None
    assert champion_version(NAME) == v1
    info = version_info(NAME, v1)
    assert info["aliases"] == [CHAMPION]
    assert info["tags"]["gate.moved"] == "true"
    assert info["tags"]["auc_loss"] == "0.45"


def test_better_moves_worse_and_tie_do_not(mlflow_store):
    v1 = _new_version()
    gate(NAME, v1, 0.45, None)

    v2 = _new_version()
    worse = gate(NAME, v2, 0.46, 0.45)
    assert not worse.moved and champion_version(NAME) == v1
    assert worse.champion_version == v1 and "not better" in worse.reason

    v3 = _new_version()
    tie = gate(NAME, v3, 0.45, 0.45)
    assert not tie.moved and champion_version(NAME) == v1
    assert version_info(NAME, v3)["tags"]["gate.moved"] == "false"

    v4 = _new_version()
    better = gate(NAME, v4, 0.44, 0.45, day="2026-11-04")
    assert better.moved and champion_version(NAME) == v4
    assert better.as_dict() == {
        "name": NAME,
        "version": v4,
        "moved": True,
        "candidate_auc_loss": 0.44,
        "champion_auc_loss": 0.45,
        "champion_version": v1,
        "reason": "candidate AucLoss 0.44 < champion v1 0.45",
        "day": "2026-11-04",
    }
    assert version_info(NAME, v4)["tags"]["gate.champion_version"] == str(v1)
    assert version_info(NAME, v1)["aliases"] == []

    with pytest.raises(ValueError, match="re-score"):
        gate(NAME, _new_version(), 0.1, None)  # a champion exists: its score is required
    assert champion_version(NAME) == v4


def test_complete_registration_sets_missing_aliases_only(mlflow_store):
    v1 = _new_version()  # registered, then the job stopped: no alias at all
    first = complete_registration(NAME, v1, 0.45, day="2026-11-02")
    assert first is not None and first.moved
    assert alias_version(NAME, CANDIDATE) == v1 and champion_version(NAME) == v1
    assert complete_registration(NAME, v1, 0.45, day="2026-11-02") is None  # done: no second gate

    v2, v3 = _new_version(), _new_version()
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(NAME, CANDIDATE, str(v3))
    assert complete_registration(NAME, v2, 0.40, day="2026-11-03") is None  # a champion exists
    assert alias_version(NAME, CANDIDATE) == v3  # a newer candidate is not moved back
    assert champion_version(NAME) == v1


def test_gate_decision_logged_to_run(mlflow_store, tmp_path):
    v1 = _new_version()
    with open_tracker(tmp_path, "exp", "gate") as tracker:
        decision = gate(NAME, v1, 0.3, None, tracker=tracker)
    from mlflow import MlflowClient

    run = MlflowClient().get_run(tracker.run_id)
    assert run.data.tags["gate.moved"] == "true"
    assert run.data.tags["gate.version"] == str(v1)
    local = Path(run.info.artifact_uri.removeprefix("file://")) / "gate.json"
    assert json.loads(local.read_text()) == decision.as_dict()
    assert alias_version(NAME, "candidate") is None  # gate never touches `candidate`
