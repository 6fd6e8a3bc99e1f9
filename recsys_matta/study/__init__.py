"""Evidence for MatTA (issue 8): the Teacher stage and the ablation study.

* `teacher`: `matta teacher fit|score`, soft labels for data with event labels only.
* `arms` / `runner` / `results` / `figures` / `report` / `command`: `matta study` (every arm x
  seed as a training job, Table-3/4-shaped tables, Mix'n'Match frontier, Shampoo factor heatmap,
  MLflow) and `matta study-report` (several studies -> docs/results.md + docs/results.json).

Submodules import torch / sklearn / mlflow lazily; importing this package is cheap.
"""

from recsys_matta.study.arms import ARMS, BASELINE, Arm, StudySettings

__all__ = ["ARMS", "BASELINE", "Arm", "StudySettings"]
