"""The MatTA loss (paper section 3.1, binary case; docs/architecture.md section 6, "The loss").

    L_S  = BCE(σ(logit_S),  y)
    L_TA = BCE(σ(logit_TA), y)
    L_D  = BCE(σ(logit_S),  stopgrad(σ(logit_TA)))     # no gradient reaches the TA through L_D
    L    = ω_S L_S + ω_TA L_TA + ramp(t) ω_D L_D
         + ω_E mean_c [BCE(σ(logit_c), y) + ramp(t) ω_ED BCE(σ(logit_c), stopgrad(σ(logit_TA)))]

The last line is elastic training (recsys_matta.train.elastic): the sampled Mix'n'Match
sub-networks c of the step, each on the label and distilled in place from the TA.

All terms from logits with `binary_cross_entropy_with_logits` (stable for large |logit|).
The production baseline trains on `baseline_loss` = BCE(σ(logit_B), y), nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from recsys_matta.specs.config import ElasticConfig, LossConfig


def distill_ramp(step: int, delay: int, ramp: int) -> float:
    """0 for the first `delay` steps, then linear from 0 to 1 over `ramp` steps, then 1.

    `step` counts optimizer steps from 0. With ramp = 0 the weight jumps to 1 at `delay`.
    """
    if step < delay:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - delay) / ramp)


@dataclass
class LossTerms:
    """The total loss and each term (terms detached, for logging)."""

    total: Tensor
    student: Tensor
    ta: Tensor | None
    distill: Tensor | None
    ramp: float
    elastic: Tensor | None = None

    def detached(self) -> dict[str, Tensor]:
        """Each term as a detached 0-d tensor, keyed `loss/<term>` (no device sync)."""
        out = {"loss/total": self.total.detach(), "loss/student": self.student}
        if self.ta is not None:
            out["loss/ta"] = self.ta
        if self.distill is not None:
            out["loss/distill"] = self.distill
            out["loss/distill_ramp"] = torch.tensor(self.ramp)
        if self.elastic is not None:
            out["loss/elastic"] = self.elastic
        return out


def matta_loss(
    logit_s: Tensor,
    logit_ta: Tensor | None,
    y: Tensor,
    step: int,
    cfg: LossConfig,
    extra: Sequence[Tensor] = (),
    elastic: ElasticConfig | None = None,
) -> LossTerms:
    """logit_s, logit_ta, y and each of `extra` (the sampled sub-networks' logits): (B,).
    `logit_ta=None` is the Student-only loss ω_S L_S."""
    l_s = F.binary_cross_entropy_with_logits(logit_s, y)
    if logit_ta is None:
        total = cfg.w_student * l_s
        return LossTerms(total, l_s.detach(), None, None, 0.0)
    l_ta = F.binary_cross_entropy_with_logits(logit_ta, y)
    l_d = F.binary_cross_entropy_with_logits(logit_s, torch.sigmoid(logit_ta.detach()))
    r = distill_ramp(step, cfg.distill_delay, cfg.distill_ramp)
    total = cfg.w_student * l_s + cfg.w_ta * l_ta + (r * cfg.w_distill) * l_d
    if not extra:
        return LossTerms(total, l_s.detach(), l_ta.detach(), l_d.detach(), r)
    if elastic is None:
        raise ValueError("sampled sub-network logits need the elastic config (its weights)")
    p_ta = torch.sigmoid(logit_ta.detach())
    l_e = sum(
        F.binary_cross_entropy_with_logits(c, y) + (r * elastic.w_distill) * F.binary_cross_entropy_with_logits(c, p_ta)
        for c in extra
    ) / len(extra)
    total = total + elastic.weight * l_e
    return LossTerms(total, l_s.detach(), l_ta.detach(), l_d.detach(), r, l_e.detach())


def baseline_loss(logit_b: Tensor, y: Tensor) -> Tensor:
    """logit_b, y: (B,). The production baseline's loss, BCE(σ(logit_B), y) (no weights)."""
    return F.binary_cross_entropy_with_logits(logit_b, y)
