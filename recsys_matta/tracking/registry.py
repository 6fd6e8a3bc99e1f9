"""Model registry: register the Student, alias `candidate`, and the champion gate.

Aliases, not stages (docs/architecture.md section 9): every new version gets alias `candidate`; alias
`champion` moves to a version only when its AucLoss on a held-out day is strictly lower than the
current champion's AucLoss on the SAME day. The caller re-scores the champion
(`load_champion(name)` returns it as a pyfunc model) and passes both numbers to `gate`; ties do
not move the champion; the first version becomes champion.

These helpers use the process's MLflow store (`configure_mlflow` / `open_tracker` set it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

    from recsys_matta.tracking.tracker import Tracker

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "matta-student"
CANDIDATE = "candidate"
CHAMPION = "champion"


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _fmt(x: Any) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


def version_tags(
    day: str, auc_loss: float, baseline_auc_loss: float | None = None, **extra: Any
) -> dict[str, str]:
    """The tags every registered Student carries: the day it was evaluated on, its AucLoss and
    the baseline's AucLoss on that day (floats written with `repr`, so they read back exactly)."""
    tags = {"day": str(day), "auc_loss": _fmt(float(auc_loss))}
    if baseline_auc_loss is not None:
        tags["baseline_auc_loss"] = _fmt(float(baseline_auc_loss))
    tags.update({k: _fmt(v) for k, v in extra.items()})
    return tags


def register(
    model_uri: str, name: str = DEFAULT_MODEL_NAME, tags: Mapping[str, Any] | None = None, alias: str = CANDIDATE
) -> int:
    """Register `model_uri` as a new version of `name` (created when missing), tag it, point
    `alias` (default `candidate`) at it, and return the version number."""
    import mlflow

    from recsys_matta.tracking.verbosity import registry_chatter_dropped

    str_tags = {k: _fmt(v) for k, v in (tags or {}).items() if v is not None}
    with registry_chatter_dropped():  # the job prints its own "registered ... vN" line
        mv = mlflow.register_model(model_uri, name, tags=str_tags)
    version = int(mv.version)
    _client().set_registered_model_alias(name, alias, str(version))
    log.info("registered %s version %d (%s) as %r", name, version, model_uri, alias)
    return version


def alias_version(name: str, alias: str) -> int | None:
    """The version `alias` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return int(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def champion_version(name: str = DEFAULT_MODEL_NAME) -> int | None:
    return alias_version(name, CHAMPION)


def version_info(name: str, version: int) -> dict[str, Any]:
    """Tags and aliases of one version (for reports and tests)."""
    mv = _client().get_model_version(name, str(version))
    return {"version": int(mv.version), "tags": dict(mv.tags), "aliases": list(mv.aliases)}


def load_version(name: str, version: int | str) -> "PyFuncModel":
    """Load a registered version (a number or an alias) as a pyfunc model."""
    import mlflow.pyfunc

    ref = f"@{version}" if isinstance(version, str) and not version.isdigit() else f"/{version}"
    return mlflow.pyfunc.load_model(f"models:/{name}{ref}")


def load_champion(name: str = DEFAULT_MODEL_NAME) -> "PyFuncModel | None":
    """The current champion as a pyfunc model (predict on raw rows to re-score it), or None.

    `model.unwrap_python_model()` gives the `StudentPyfunc` (its `.model` and `.spec`) when
    scoring on already-encoded batches is cheaper.
    """
    if champion_version(name) is None:
        return None
    return load_version(name, CHAMPION)


@dataclass(frozen=True)
class GateDecision:
    """The champion gate's verdict.

    Args:
        name: registered model name.
        version: the candidate version.
        moved: True when alias `champion` now points at `version`.
        candidate_auc_loss: the candidate's AucLoss on the held-out day.
        champion_auc_loss: the previous champion's AucLoss on the same day (None: no champion).
        champion_version: the previous champion version (None: no champion).
        reason: one line explaining the decision.
        day: the held-out day both were scored on, when given.
    """

    name: str
    version: int
    moved: bool
    candidate_auc_loss: float
    champion_auc_loss: float | None
    champion_version: int | None
    reason: str
    day: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "champion moved to" if self.moved else "champion stays; candidate"
        return f"gate [{self.name}]: {verdict} version {self.version}: {self.reason}"


def decide(
    candidate_auc_loss: float, champion_auc_loss: float | None, champion: int | None, version: int
) -> tuple[bool, str]:
    """The gate rule alone (pure): (move?, reason)."""
    cand = float(candidate_auc_loss)
    if champion == version:
        return False, f"version {version} is already the champion"
    if not math.isfinite(cand):
        return False, f"candidate AucLoss {cand} is not finite"
    if champion is None:
        return True, f"no champion yet (candidate AucLoss {cand:.6g})"
    if champion_auc_loss is None:
        raise ValueError(
            f"champion version {champion} exists: re-score it on the same held-out day "
            "(load_champion) and pass champion_auc_loss"
        )
    champ = float(champion_auc_loss)
    if not math.isfinite(champ):
        return True, f"champion version {champion} AucLoss {champ} is not finite"
    if cand < champ:
        return True, f"candidate AucLoss {cand:.6g} < champion v{champion} {champ:.6g}"
    rel = "=" if cand == champ else ">"
    return False, (
        f"candidate AucLoss {cand:.6g} {rel} champion v{champion} {champ:.6g} (not better)"
    )


def gate(
    name: str,
    version: int,
    candidate_auc_loss: float,
    champion_auc_loss: float | None,
    *,
    day: str | None = None,
    tracker: "Tracker | None" = None,
) -> GateDecision:
    """Move alias `champion` to `version` when strictly better than the current champion.

    Both AucLoss values must come from the same held-out day. The decision is logged (logger
    `recsys_matta.tracking.registry`), written as `gate.*` tags on the version and, with a
    `tracker`, as the run artifact `gate.json` plus `gate.*` run tags.

    Raises:
        ValueError: a champion exists but `champion_auc_loss` is None.
    """
    client = _client()
    version = int(version)
    current = champion_version(name)
    moved, reason = decide(candidate_auc_loss, champion_auc_loss, current, version)
    if moved:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    decision = GateDecision(
        name=name,
        version=version,
        moved=moved,
        candidate_auc_loss=float(candidate_auc_loss),
        champion_auc_loss=None if champion_auc_loss is None else float(champion_auc_loss),
        champion_version=current,
        reason=reason,
        day=day,
    )
    tags = {
        "gate.day": str(day),
        "gate.moved": str(moved).lower(),
        "gate.reason": reason,
        "gate.champion_version": str(current),
        "gate.champion_auc_loss": _fmt(decision.champion_auc_loss),
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, v)
    log.info(decision.summary())
    if tracker is not None:
        tracker.log_dict(decision.as_dict(), "gate.json")
        tracker.set_tags({**tags, "gate.version": version})
    return decision


def complete_registration(
    name: str, version: int, auc_loss: float, *, day: str, tracker: "Tracker | None" = None
) -> GateDecision | None:
    """Finish a registration a job stopped in the middle of (the version exists, its aliases may
    not): alias `candidate` moves to `version` unless a newer version holds it, and `version` is
    gated when there is no champion yet. Returns that gate decision, else None."""
    cand = alias_version(name, CANDIDATE)
    if cand is None or cand < version:
        _client().set_registered_model_alias(name, CANDIDATE, str(version))
    if champion_version(name) is None:
        return gate(name, version, auc_loss, None, day=day, tracker=tracker)
    return None
