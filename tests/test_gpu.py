"""Checks that need a CUDA device (`pytest -m gpu`, run by scripts/gpu_check.sh); skipped here."""

import pytest
import torch

from recsys_matta.data.reader import DayReader
from recsys_matta.models import MatTAModel
from tests.tiny import DAYS, tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_batch_moves_to_the_gpu_pinned(spec, synthetic_root):
    batch = next(DayReader(spec, synthetic_root, 256).iter_day(DAYS[0]))
    moved = batch.pin_memory().to("cuda", non_blocking=True)
    assert moved.dense.is_cuda and moved.sparse.values().is_cuda and moved.teacher.is_cuda
    assert torch.equal(moved.sparse.values().cpu(), batch.sparse.values())


def test_model_on_gpu_matches_cpu(spec, synthetic_root):
    cfg = tiny_config()
    torch.manual_seed(0)
    cpu = MatTAModel(spec, cfg.model).eval()
    gpu = MatTAModel(spec, cfg.model).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    batch = next(DayReader(spec, synthetic_root, 256).iter_day(DAYS[0]))
    with torch.no_grad():
        s_cpu, t_cpu = cpu(batch)
        s_gpu, t_gpu = gpu(batch.to("cuda"))
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(t_gpu.cpu(), t_cpu, atol=1e-4, rtol=1e-4)


def test_online_training_on_gpu(spec, synthetic_root, tmp_path):
    from recsys_matta.distributed.context import DistContext
    from recsys_matta.online.trainer import OnlineTrainer

    cfg = tiny_config("train.device=cuda")
    tr = OnlineTrainer(spec, cfg, synthetic_root, tmp_path, ctx=DistContext.from_env("cuda"))
    out = tr.run(DAYS[:2])
    assert out[1].day == DAYS[1] and out[1].student.auc_loss < 0.5  # a DayRecord
    assert next(tr.model.parameters()).is_cuda
