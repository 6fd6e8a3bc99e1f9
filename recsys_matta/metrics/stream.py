"""Streamed collection of a day's predictions, exact across ranks (gather, never average AUCs)."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


class PredictionBuffer:
    """Appends (B,) prediction and label tensors; `gather()` returns all ranks' rows as numpy.

    Memory: 4 bytes per row per column (a 10M-row day holds 40 MB per model), which is what an
    exact AUROC needs; no per-batch Python objects are kept beyond the tensor list.
    """

    def __init__(self, names: list[str]):
        self.names = names
        self._parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def add(self, **cols: torch.Tensor) -> None:
        for n, t in cols.items():
            self._parts[n].append(t.detach().float().reshape(-1).cpu())

    def local(self) -> dict[str, torch.Tensor]:
        return {
            n: torch.cat(p) if p else torch.zeros(0, dtype=torch.float32) for n, p in self._parts.items()
        }

    def gather(self) -> dict[str, np.ndarray]:
        """Every rank's rows (concatenated in rank order) on every rank."""
        cols = self.local()
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return {n: t.numpy() for n, t in cols.items()}
        world = dist.get_world_size()
        # one stacked tensor per rank: (C, N_rank), padded to the largest N
        stacked = torch.stack([cols[n] for n in self.names])
        n_local = torch.tensor([stacked.shape[1]], dtype=torch.long)
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
        dist.all_gather(sizes, n_local)
        n_max = int(max(s.item() for s in sizes))
        padded = torch.zeros(len(self.names), n_max, dtype=torch.float32)
        padded[:, : stacked.shape[1]] = stacked
        if dist.get_backend() == "nccl":
            padded = padded.cuda()
        bufs = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(bufs, padded)
        full = torch.cat([b.cpu()[:, : int(s.item())] for b, s in zip(bufs, sizes)], dim=1)
        return {n: full[i].numpy() for i, n in enumerate(self.names)}
