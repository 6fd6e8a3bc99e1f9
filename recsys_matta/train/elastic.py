"""Elastic training: which Mix'n'Match sub-networks a training step trains besides the Student
and the TA (docs/architecture.md section 6, "Elastic training").

    sample_choices(cfg, elastic, seed, step) -> [Choice, ...]      # deterministic in (seed, step)

The sandwich rule of slimmable networks (Yu & Huang 2019): every step trains the smallest (the
Student) and the largest (the TA) sub-network plus a few sampled in between, each sampled one
distilled in place from the largest (stop-gradient), as MatFormer samples its granularities.
The draw depends only on (seed, step), so every rank of a job and a resumed job train the same
sub-networks at the same step.
"""

from __future__ import annotations

import random

from recsys_matta.models.choice import Choice, wide_narrow_wide
from recsys_matta.specs.config import ElasticConfig
from recsys_matta.specs.model import TowerConfig


def sample_choices(cfg: TowerConfig, elastic: ElasticConfig, seed: int, step: int) -> list[Choice]:
    """The sub-networks step `step` trains besides the Student and the TA (none under the
    `endpoints` rule or for a tower with a single unit)."""
    n = cfg.num_units
    if elastic.rule == "endpoints" or n < 2:
        return []
    rng = random.Random(f"elastic:{seed}:{step}")  # str seeds hash the same in every process
    if elastic.family == "wide_narrow_wide":
        ks = list(range(1, n))  # interior K: 0 is the Student, n the TA
        picked = rng.sample(ks, min(elastic.samples, len(ks)))
        return [wide_narrow_wide(cfg, k) for k in sorted(picked)]
    out: list[Choice] = []
    for _ in range(elastic.samples):
        flags = [rng.random() < 0.5 for _ in range(n)]
        if all(flags) or not any(flags):  # an endpoint: flip one unit
            i = rng.randrange(n)
            flags[i] = not flags[i]
        out.append(Choice.from_flags(cfg, flags))
    return out
