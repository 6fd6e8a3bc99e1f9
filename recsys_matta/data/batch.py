"""The unit that flows from the reader to the model: one mini-batch of events."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass
class Batch:
    """A mini-batch.

    Args:
        sparse: one key per sparse feature in spec order; multi-valued features are jagged.
        dense: (B, D) float32, transforms and normalisation applied, D = number of dense features.
        teacher: (B,) float32 Teacher soft label in [0, 1] (equals `event` when the spec has no
            Teacher column).
        event: (B,) float32 event label in {0, 1}, or None when the spec has no event column.
    """

    sparse: KeyedJaggedTensor
    dense: torch.Tensor
    teacher: torch.Tensor
    event: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.dense.shape[0]) if self.dense.dim() == 2 else int(self.teacher.shape[0])

    def label(self, source: str = "teacher") -> torch.Tensor:
        """The training label: `teacher` (soft) or `event` (0/1)."""
        if source == "event":
            if self.event is None:
                raise ValueError("the spec has no event label column; use label=teacher")
            return self.event
        return self.teacher

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(
            sparse=self.sparse.to(device=torch.device(device), non_blocking=non_blocking),
            dense=self.dense.to(device, non_blocking=non_blocking),
            teacher=self.teacher.to(device, non_blocking=non_blocking),
            event=None if self.event is None else self.event.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> "Batch":
        return Batch(
            sparse=self.sparse.pin_memory(),
            dense=self.dense.pin_memory(),
            teacher=self.teacher.pin_memory(),
            event=None if self.event is None else self.event.pin_memory(),
        )
