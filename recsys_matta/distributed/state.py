"""World-size-independent state of the engine's models (recsys_matta.distributed.sharded).

Checkpoints are world-size independent: `gather_model_state` / `ShardedModelOptimizer.
gather_state_dict` return the plain format (full tensors, rank 0 only: the plain modules' state
dict, and the dense optimizer's state next to TorchRec's `RowWiseAdagrad` state dict for the
tables); `load_full_state` / `load_state_dict` copy full tensors into the local shards of any
world size, one process (world size 1) included. Gathering a table sends each rank's shards to
rank 0 (`ShardedTensor.gather`): only rank 0 ever holds a full table (one at a time), the others
at most their own shards. The fresh tables are never built in full: `init_tables` fills each
rank's shards chunk by chunk, the same rows at any world size. Limits: every rank reads the whole
checkpoint (host memory = one full copy), row-wise Adagrad accumulators (one float per row) are
summed over the ranks in full-length buffers; a column-wise split table keeps one Adagrad
accumulator per column shard (FBGEMM), saved as their width-weighted mean and loaded as that value
in every column shard (exact for table-wise and row-wise sharding; the weights are always exact).
data_parallel tables are not offered (their dense kernel would leave them to the dense optimizer).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from recsys_matta.errors import UserError
from recsys_matta.models.embedding import INIT_CHUNK_ROWS, init_rows
from recsys_matta.specs.config import OptimConfig
from recsys_matta.train.optim import DenseOptimizer, Shampoo, make_dense_optimizer, split_parameters

TABLE_PREFIX = "ebc.embedding_bags."


# ---- full <-> sharded tensors ------------------------------------------------------------------
def _comm_device() -> torch.device:
    """Where collective buffers live: the GPU with nccl, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def is_main() -> bool:
    """Rank 0 (or no process group)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def _gather_full(v: torch.Tensor) -> torch.Tensor | None:
    """The full tensor of `v` (CPU) on rank 0; None on the others. Collective for sharded
    tensors: every rank sends its local shards to rank 0, where the full buffer lives."""
    if not isinstance(v, ShardedTensor):
        return v.detach().cpu().clone() if is_main() else None
    out = torch.empty(v.size(), dtype=v.dtype, device=_comm_device()) if is_main() else None
    v.gather(dst=0, out=out)
    return None if out is None else out.cpu()


def _sum_ranks(full: torch.Tensor) -> torch.Tensor | None:
    """Sum of `full` over the ranks, on rank 0 (None elsewhere)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.reduce(full, dst=0)
    return full.cpu() if is_main() else None


def _load_full(v: torch.Tensor, full: torch.Tensor) -> None:
    """Copy the part of `full` that `v` holds here (its local shards, or all of it)."""
    if tuple(v.shape) != tuple(full.shape):
        raise ValueError(f"shape {tuple(full.shape)} in the checkpoint, {tuple(v.shape)} in the model")
    if isinstance(v, ShardedTensor):
        for shard in v.local_shards():
            md = shard.metadata
            idx = tuple(slice(o, o + s) for o, s in zip(md.shard_offsets, md.shard_sizes))
            shard.tensor.detach().copy_(full[idx])
    else:
        v.detach().copy_(full)


def gather_model_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The plain `state_dict` (full tensors) of a sharded model on rank 0, None on the others.
    Collective: every rank must call it."""
    out = {k: _gather_full(v) for k, v in model.state_dict().items()}
    return out if is_main() else None


def load_full_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a plain `state_dict` (full tensors) into a model sharded over any world size."""
    live = model.state_dict()
    missing, extra = sorted(set(live) - set(state)), sorted(set(state) - set(live))
    if missing or extra:
        raise UserError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for k, v in live.items():
            try:
                _load_full(v, state[k].to(v.device if not isinstance(v, ShardedTensor) else "cpu"))
            except ValueError as e:
                raise UserError(f"checkpoint key {k}: {e}") from None


def init_tables(model: nn.Module, seed: int) -> None:
    """Fill the tables of `model` (plain or sharded over any world size) with their initial rows
    (`init_rows`): each rank writes its local shards only, one init chunk at a time."""
    with torch.no_grad():
        for key, v in model.state_dict().items():
            if not (key.startswith(TABLE_PREFIX) and key.endswith(".weight")):
                continue
            table, (rows, dim) = key[len(TABLE_PREFIX) : -len(".weight")], v.shape
            if isinstance(v, ShardedTensor):
                shards = [(s.tensor, s.metadata.shard_offsets, s.metadata.shard_sizes) for s in v.local_shards()]
            else:
                shards = [(v, [0, 0], list(v.shape))]
            for t, (r0, c0), (n, w) in shards:
                cols = slice(c0, c0 + w)
                a = r0
                while a < r0 + n:
                    b = min(r0 + n, (a // INIT_CHUNK_ROWS + 1) * INIT_CHUNK_ROWS)
                    t[a - r0 : b - r0].copy_(init_rows(seed, table, rows, dim, a, b, cols))
                    a = b


# ---- optimizers --------------------------------------------------------------------------------
def _rowwise_state_dict(sums: list[torch.Tensor], steps: int, cfg: OptimConfig) -> dict:
    """`sums` (rows,) per table -> the state dict of TorchRec's Python `RowWiseAdagrad` (the
    checkpoint's format for the tables' optimizer, since the first checkpoints), built by that
    optimizer itself so the format cannot drift."""
    params = [nn.Parameter(torch.zeros(len(s), 1)) for s in sums]
    opt = RowWiseAdagrad(params, lr=cfg.embedding_lr, eps=cfg.embedding_eps)
    for p, s in zip(params, sums):
        opt.state[p]["sum"] = s.reshape(-1, 1).clone()
        opt.state[p]["step"] = torch.tensor(float(steps))
    return opt.state_dict()


def _rowwise_sums(state: dict, rows: list[int], cfg: OptimConfig) -> tuple[list[torch.Tensor], int]:
    """Inverse of `_rowwise_state_dict`: (sums (rows,) per table, steps)."""
    params = [nn.Parameter(torch.zeros(n, 1)) for n in rows]
    opt = RowWiseAdagrad(params, lr=cfg.embedding_lr, eps=cfg.embedding_eps)
    opt.load_state_dict(state)
    steps = int(opt.state[params[0]]["step"]) if params else 0
    return [opt.state[p]["sum"].reshape(-1) for p in params], steps


def _column_shards(weight: torch.Tensor) -> list[int]:
    """Widths of the column shards of a sharded table, in column order ([D] when not split)."""
    if not isinstance(weight, ShardedTensor):
        return [weight.shape[1]]
    cols = {(md.shard_offsets[1], md.shard_sizes[1]) for md in weight.metadata().shards_metadata}
    return [w for _, w in sorted(cols)]


class ShardedModelOptimizer:
    """The optimizers of one model inside DMP: the tables step inside backward (FBGEMM's fused
    sparse row-wise Adagrad, set up by `apply_optimizer_in_backward`), everything else with the
    dense optimizer. Its checkpoint (`gather_state_dict` / `load_state_dict`) is world-size
    independent: `{"dense": dense optimizer state, "embedding": RowWiseAdagrad state dict}`.

    Args:
        model: the model after DMP (its `ebc` sharded).
        cfg: its optimizer settings (dense optimizer, embedding lr / eps).
        tables: the model's table parameter names in plain order (`ebc.embedding_bags.<t>.weight`).
    """

    def __init__(self, model: nn.Module, cfg: OptimConfig, tables: list[str]):
        self.model, self.cfg, self.tables = model, cfg, tables
        _, dense = split_parameters(model)  # same order as the plain model's dense parameters
        unfused = [
            n for n, p in model.named_parameters() if n.startswith("ebc.") and not hasattr(p, "_in_backward_optimizers")
        ]
        if unfused:
            raise RuntimeError(f"embedding parameters without a fused optimizer: {unfused}")
        self.dense: Shampoo | DenseOptimizer = make_dense_optimizer(dense, cfg)
        self.steps = 0

    def step(self) -> None:
        self.dense.step()
        self.steps += 1

    def zero_grad(self) -> None:
        self.dense.zero_grad(set_to_none=True)

    def _fused_states(self, fused_sd: dict) -> dict[str, ShardedTensor]:
        """{table parameter name: its momentum} of the fused tables that have a shard here
        (a rank's fused optimizer knows only its own tables)."""
        out = {}
        for key, st in fused_sd["state"].items():  # key: embedding_bags.<table>.weight
            table = key.split(".")[-2]
            (mom,) = [v for k, v in st.items() if k.endswith("momentum1")]
            out[f"{TABLE_PREFIX}{table}.weight"] = mom
        return out

    def _gather_momentum(self, mom: ShardedTensor | None, numel: int) -> torch.Tensor | None:
        """The full momentum (numel,) of one fused table on rank 0 (collective: ranks without a
        shard of the table contribute zeros)."""
        full = torch.zeros(numel, dtype=torch.float32, device=_comm_device())
        for shard in [] if mom is None else mom.local_shards():
            (off,), (n,) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
            full[off : off + n] = shard.tensor.reshape(-1)
        return _sum_ranks(full)

    def gather_state_dict(self) -> dict | None:
        """The plain-format optimizer state (any world size writes the same), on rank 0 (None
        elsewhere). Collective."""
        live = self.model.state_dict()
        fused = self._fused_states(self.model.ebc.fused_optimizer.state_dict())
        sums = []
        for t in self.tables:
            rows, dim = live[t].shape
            widths = _column_shards(live[t])
            full = self._gather_momentum(fused.get(t), rows * len(widths))
            if full is not None:  # one accumulator per column shard -> their width-weighted mean
                w = torch.tensor(widths, dtype=full.dtype).reshape(-1, 1) / dim
                full = (full.reshape(len(widths), rows) * w).sum(0)
            sums.append(full)
        if not is_main():
            return None
        return {
            "dense": self.dense.state_dict(),
            "embedding": _rowwise_state_dict(sums, self.steps, self.cfg),
        }

    def load_state_dict(self, state: dict) -> None:
        """Load the plain format (written at any world size)."""
        self.dense.load_state_dict(state["dense"])
        live = self.model.state_dict()
        sums, self.steps = _rowwise_sums(state["embedding"], [live[t].shape[0] for t in self.tables], self.cfg)
        by_table = dict(zip(self.tables, sums))
        fo = self.model.ebc.fused_optimizer
        fused_sd = fo.state_dict()
        with torch.no_grad():
            for t, mom in self._fused_states(fused_sd).items():
                k = len(_column_shards(live[t]))
                _load_full(mom, by_table[t].repeat(k))
        fo.load_state_dict(fused_sd)
