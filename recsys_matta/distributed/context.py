"""Process context: rank, world size and device. One process without torchrun is world size 1."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass
class DistContext:
    """Args:
    rank: global rank.
    world_size: number of processes.
    local_rank: rank on this node (selects the GPU).
    device: the device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistContext":
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; init the process group when > 1
        (nccl on GPU, gloo on CPU)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cpu")
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
            atexit.register(_destroy_group)  # leave the group cleanly at exit
        return cls(rank=rank, world_size=world, local_rank=local, device=dev)

    def auto_threads(self, reserved: int = 2) -> int:
        """Intra-op threads for this process: its share of the node's cores, minus `reserved`
        (the data reader's background threads), at least 1."""
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world_size)))
        return max(1, (os.cpu_count() or 1) // max(local, 1) - reserved)

    def ensure_group(self) -> None:
        """A process group even in one process without torchrun (TorchRec's DMP needs one):
        a single-rank group (nccl on GPU, gloo on CPU) over an in-memory store."""
        if not dist.is_initialized():
            if self.distributed:
                raise RuntimeError("world size > 1 but no process group; build the context with from_env")
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)

    def all_gather_object(self, obj: object) -> list:
        """`obj` of every rank, in rank order (picklable objects; small ones: counts, records)."""
        if not (self.distributed or dist.is_initialized()):
            return [obj]
        out: list = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum of each value over ranks (for loss averages and row counts)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.cpu().tolist()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
