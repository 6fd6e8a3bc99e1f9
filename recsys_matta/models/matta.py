"""The MatTA model: shared TorchRec embeddings feeding a Student and an M-nested TA.

    pooled = ebc(batch.sparse)                              # (B, F, d_TA), run once
    logit_S  = tower.forward_at(pooled, dense, Student widths)   # reads pooled[..., :d_S]
    logit_TA = tower.forward_at(pooled, dense, TA widths)

With `share_params` (M-nesting) one `Tower` holds the TA weights and the Student runs their
top-left blocks. Without it (paper Table 4 ablation) the Student and the TA are two separate
towers over the same tables. `student_only=True` is the production baseline: tables of width
d_S and exactly the Student's tower. `ta_alone=True` is the TA-sized reference: tables of width
d_TA and exactly the TA's tower (its TA-only blocks included), trained alone; it too returns
`(logit, None)`. The model is pure: no loss inside.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recsys_matta.data.batch import Batch
from recsys_matta.models.choice import Choice, student_choice, ta_choice
from recsys_matta.models.embedding import PooledTokens, build_ebc
from recsys_matta.models.tower import Tower, compiled_forward_many
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.model import ModelConfig, Widths


class MatTAModel(nn.Module):
    """Student + TA over one `EmbeddingBagCollection`.

    Args:
        spec: the feature spec (sparse features -> tables and tokens, dense features -> tokens).
        cfg: the tower's nesting units (Student = narrow, TA = wide) and how they are shared.
        student_only: build only the Student (the production baseline); `forward` returns
            `(logit_student, None)`.
        ta_alone: build only the TA's architecture (the TA-sized reference); `forward` returns
            `(logit, None)` and `student_only` is True (one tower).
        ebc_device: device of the embedding tables (`"meta"` when DistributedModelParallel will
            materialise them); dense weights are created on the default device.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        cfg: ModelConfig,
        student_only: bool = False,
        ebc_device: torch.device | str | None = None,
        ta_alone: bool = False,
    ) -> None:
        super().__init__()
        self.spec, self.cfg, self.ta_alone = spec, cfg, ta_alone
        self.student_only = student_only or ta_alone
        f, d = len(spec.sparse), len(spec.dense)
        self.embedding_dim = cfg.d_model[0] if student_only and not ta_alone else cfg.d_model[1]
        self.ebc = build_ebc(spec, self.embedding_dim, cfg.pooling, ebc_device)
        self._pooled = PooledTokens(spec.sparse_names)
        self.student_tower: Tower | None = None
        if self.student_only:  # one fixed-width tower: the Student's or the TA's architecture
            self.tower = Tower(f, d, cfg.fixed(cfg.ta() if ta_alone else cfg.student()))
            self._student_widths = self._ta_widths = self.tower.cfg.ta()
            return
        self.tower = Tower(f, d, cfg, fan=cfg.ta_init)
        self._student_widths: Widths = cfg.student()
        self._ta_widths: Widths = cfg.ta()
        if not cfg.share_params:
            self.student_tower = Tower(f, d, cfg.fixed(cfg.student()))
            self._student_widths = self.student_tower.cfg.ta()

    def fresh(self, ebc_device: torch.device | str | None = None) -> "MatTAModel":
        """A newly initialised model of the same architecture."""
        return MatTAModel(
            self.spec, self.cfg, self.student_only and not self.ta_alone, ebc_device, ta_alone=self.ta_alone
        )

    def pooled(self, batch: Batch) -> torch.Tensor:
        """Pooled embeddings (B, F, embedding_dim), features in spec order."""
        return self._pooled(self.ebc(batch.sparse))

    def _student_path(self) -> Tower:
        return self.student_tower if self.student_tower is not None else self.tower

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(logit_student (B,), logit_ta (B,) or None when student_only)`."""
        logit_s, logit_ta, _ = self.forward_elastic(batch, ())
        return logit_s, logit_ta

    def forward_elastic(
        self, batch: Batch, choices: Sequence[Choice], compiled: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """`(logit_student, logit_ta, [logits of each Mix'n'Match choice])`, all (B,), with the
        tables run once (elastic training: recsys_matta.train.elastic). `compiled`: the shared
        tower through `torch.compile` (`train.compile`; the tables stay eager)."""
        pooled = self.pooled(batch)  # (B, F, d)
        dense = batch.dense
        if self.student_only or self.student_tower is not None:
            if choices:
                raise ValueError("Mix'n'Match sub-networks need one shared tower (share_params=True, MatTA)")
            logit_s = self._student_path().forward_at(pooled, dense, self._student_widths)
            logit_ta = None if self.student_only else self.tower.forward_at(pooled, dense, self._ta_widths)
            return logit_s, logit_ta, []
        ws = [self._student_widths, self._ta_widths, *(self.tower_for(c)[1] for c in choices)]
        many = compiled_forward_many() if compiled else Tower.forward_many
        logit_s, logit_ta, *extra = many(self.tower, pooled, dense, ws)
        return logit_s, logit_ta, extra

    def tower_for(self, choice: Choice) -> tuple[Tower, Widths]:
        """The tower that runs `choice` and its widths in that tower (used by extraction)."""
        if self.ta_alone:
            raise ValueError("a TA-alone model has one tower only; it has no Mix'n'Match sub-networks")
        choice.check(self.cfg)
        if choice == student_choice(self.cfg):
            return self._student_path(), self._student_widths
        if self.student_only:
            raise ValueError(f"a student_only model has only the Student sub-network, not {choice.label}")
        if self.student_tower is not None and choice != ta_choice(self.cfg):
            raise ValueError(
                f"Mix'n'Match needs share_params=True; without it only the Student and the TA exist "
                f"(got {choice.label})"
            )
        return self.tower, choice.widths(self.cfg)

    def forward_choice(self, batch: Batch, choice: Choice) -> torch.Tensor:
        """Logits (B,) of the Mix'n'Match sub-network `choice`."""
        tower, w = self.tower_for(choice)
        return tower.forward_at(self.pooled(batch), batch.dense, w)
