"""The job's registry steps, shared by the daily pipeline (`jobs/daily.py`) and the one-off
commands (`jobs/commands.py`): the delayed champion gate, registering the day's Student as the
`candidate`, and registering the extracted wide-narrow-wide sizes (docs/architecture.md section 9).
MLflow is imported inside the functions, so importing this module stays cheap."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console

from recsys_matta.data.partitions import parse_day
from recsys_matta.errors import UserError
from recsys_matta.jobs.scoring import raw_frames, score_pyfunc
from recsys_matta.models.extract import extract, student_choice, wide_narrow_wide
from recsys_matta.online.trainer import OnlineTrainer
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.config import RunConfig
from recsys_matta.train.records import DayRecord

log = logging.getLogger(__name__)


def gate_candidate(
    spec: FeatureSpec, cfg: RunConfig, data: Path, day: str, tracker, step: int, console: Console | None = None
):
    """The delayed gate before training `day`: the `candidate` version (trained through an
    earlier day, not gated yet) against the `champion`, both loaded from the registry and scored
    on the raw rows of `day`. Returns the `GateDecision`, or None when there is nothing to gate
    (no candidate, the candidate is the champion, already gated, or it has seen `day`)."""
    from recsys_matta.tracking.registry import (
        CANDIDATE,
        alias_version,
        champion_version,
        gate,
        load_champion,
        load_version,
        version_info,
    )

    name = cfg.registered_model
    label = cfg.eval_label
    cand, champ = alias_version(name, CANDIDATE), champion_version(name)

    def skip(why: str) -> None:
        if console is not None:
            console.print(f"[bold]gate[/bold] {name} on {day}: nothing to judge ({why})")

    if cand is None:
        return skip("no candidate registered yet")
    if cand == champ:
        return skip(f"the candidate v{cand} is the champion already")
    tags = version_info(name, cand)["tags"]
    if "gate.day" in tags:
        return skip(f"the candidate v{cand} was judged on {tags['gate.day']} already")
    trained = tags.get("day")
    if trained is None or parse_day(trained, spec) >= parse_day(day, spec):
        log.warning("gate: %s v%d was trained through %s; it cannot be judged on %s", name, cand, trained, day)
        return None
    cand_auc = score_pyfunc(load_version(name, cand), spec, data, day, label).auc_loss
    champ_auc = None if champ is None else score_pyfunc(load_champion(name), spec, data, day, label).auc_loss
    decision = gate(name, cand, cand_auc, champ_auc, day=day, tracker=tracker)
    tracker.log_metrics(
        {"gate/candidate_auc_loss": cand_auc, "gate/champion_auc_loss": champ_auc, "gate/moved": float(decision.moved)},
        step=step,
    )
    if console is not None:
        champ_s = "none" if champ_auc is None else f"{champ_auc:.5f} (v{champ})"
        console.print(
            f"[bold]gate[/bold] {name} v{cand} (trained through {trained}) on {day}: candidate AucLoss "
            f"{cand_auc:.5f} vs champion {champ_s} -> "
            + ("[green]champion moved[/green]" if decision.moved else "[yellow]champion stays[/yellow]")
            + f" ({decision.reason})"
        )
    return decision


def register_candidate(
    trainer: OnlineTrainer, record: DayRecord, data: Path, tracker, console: Console | None = None, model=None,
    catch_up: bool = False,
):
    """Log the current Student as a pyfunc and register it (alias `candidate`, tagged with the
    day it was trained through). When the model has no champion yet it becomes the champion
    (nothing to compare with); otherwise tomorrow's gate judges it. Returns the new version and
    the first-champion `GateDecision` (or None)."""
    from recsys_matta.serving.pyfunc import log_student
    from recsys_matta.tracking.registry import champion_version, gate, register, version_tags

    spec, cfg = trainer.spec, trainer.cfg
    if cfg.ta_alone:
        raise UserError("ta_alone=true trains a study reference, not a servable Student: set daily.register_student=false")
    day, name = record.day, cfg.registered_model
    if model is None:
        model, _ = trainer.export()
    student = extract(model, student_choice(model.cfg))
    example = next(raw_frames(spec, data, day, limit=5), None)
    if example is None:
        raise UserError(f"day {day} under {data} has no rows to take an input example from")
    uri = log_student(tracker, student, spec, example, name="student", step=record.day_index, metadata={"day": day})
    baseline_auc = record.baseline.auc_loss if record.baseline else None
    version = register(uri, name, tags=version_tags(day, record.student.auc_loss, baseline_auc))
    first = None
    if champion_version(name) is None:
        first = gate(name, version, record.student.auc_loss, None, day=day, tracker=tracker)
    if console is not None:
        console.print(
            f"registered {name} v{version} (trained through {day}) as candidate"
            + (" (catch-up: the run that trained it could not register it)" if catch_up else "")
            + ("; no champion yet, so it is the champion" if first is not None else "; the next day's run gates it")
        )
    return version, first


def elastic_model_name(registered_model: str) -> str:
    """The registered model holding the extracted sizes, one alias `wnw-k<K>` per size."""
    return f"{registered_model}-elastic"


def register_elastic(
    tracker, model, spec, data: Path, days: list[str], report: dict, ks, registered_model: str, console: Console,
    trained_through: str | None = None,
) -> dict[int, int]:
    """Register the wide-narrow-wide Students with these K (rows of the Mix'n'Match `report`,
    scored on `days`) as `<registered_model>-elastic@wnw-k<K>`; returns {K: version}. With
    `trained_through` (the daily pipeline's extract stage) each version is tagged with it and a
    K whose alias already points at a version trained through that day is left alone, so a
    retried stage registers nothing twice."""
    from recsys_matta.serving.pyfunc import log_student
    from recsys_matta.tracking.registry import alias_version, register, version_info

    by_k = {r["k"]: r for r in report["models"] if r["k"] is not None}
    missing = [k for k in ks if k not in by_k]
    if missing:
        raise UserError(f"--register {missing[0]}: no wide-narrow-wide model with K={missing[0]}; have {sorted(by_k)}")
    name = elastic_model_name(registered_model)
    example = next(raw_frames(spec, Path(data), days[0], limit=5))
    out: dict[int, int] = {}
    for k in ks:
        alias = f"wnw-k{k}"
        if trained_through is not None and (v := alias_version(name, alias)) is not None:
            if version_info(name, v)["tags"].get("trained_through") == trained_through:
                console.print(f"{name}@{alias} is v{v}, trained through {trained_through} already", markup=False)
                out[k] = v
                continue
        m = extract(model, wide_narrow_wide(model.cfg, k))
        row = by_k[k]
        uri = log_student(tracker, m, spec, example, name=alias, metadata={"k": k})
        tags = {"k": k, "choice": row["choice"], "days": ",".join(days), "auc_loss": row["auc_loss"],
                "baseline_auc_loss": report["baseline_auc_loss"], "dense_params": row["dense_params"],
                "embedding_params": row["embedding_params"], "flops_per_example": row["flops_per_example"],
                "latency_ms_per_1000": row["latency_ms_per_1000"], "trained_through": trained_through}  # fmt: skip
        out[k] = v = register(uri, name, tags=tags, alias=alias)
        console.print(
            f"registered {name} v{v} as @{alias} (K={k}, {row['dense_params']:,} dense params, "
            f"AucLoss {row['auc_loss']:.5f})",
            markup=False,
        )
    return out
