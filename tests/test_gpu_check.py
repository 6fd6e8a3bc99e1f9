"""scripts/gpu_check.sh --quick on a machine without a GPU: the same steps run on the CPU (tiny
sizes), so its machinery (venv probe, data, the daily job, the step benchmark, the quick checks,
the one JSON line) is exercised here although no GPU has run it; it must still report failure."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the real check runs instead")
def test_quick_check_runs_every_step_on_a_cpu_and_reports_no_gpu(tmp_path):
    env = {
        **os.environ,
        "VENV": str(Path(sys.executable).parents[1]),
        "ROWS_PER_DAY": "3000",
        "TIMEOUT_DAILY": "600",
        "TIMEOUT_BENCH": "600",
        "OMP_NUM_THREADS": "1",
        "BENCH_ARGS": "--batch-sizes 64,256 --arms matta_adam,matta_shampoo --rounds 1 --steps 2 --warmup 1 "
        "--table-rows 50000,2000000 --sweep-batch 64 --no-flops",
    }
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--quick", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=1500)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout + proc.stderr  # one JSON line, progress on stderr
    report = json.loads(lines[0])
    assert proc.returncode == 1 and report["ok"] is False and report["pass"] is False
    assert report["error"] == "no CUDA device visible to torch" and report["gpu_count"] == 0
    assert report["days"] == 2 and report["rows_per_day"] == 3000
    steps = report["steps"]
    for name in ("venv", "env", "generate", "daily_1gpu", "benchmark"):
        assert steps[name]["ok"] is True, (name, steps[name])
    assert steps["pytest_gpu"]["skipped"] == steps["daily_multi"]["skipped"] == "quick mode"
    assert [d["day"] for d in steps["daily_1gpu"]["days"]] == ["2026-01-01", "2026-01-02"]
    checks = report["checks"]
    assert checks["daily_ok"] == {"value": True, "ok": True}
    assert 0 < checks["student_auc_loss"]["value"] < 0.5
    bench = steps["benchmark"]["json"]
    assert checks["step_2m_over_50k"]["value"] == bench["table_sweep"]["rows"]["2000000"]["step_over_first"]
    assert checks["shampoo_over_adam"]["batch"] == 256  # the largest timed batch
    assert checks["shampoo_over_adam"]["value"] == bench["results"]["256"]["shampoo_over_adam"]
    assert (tmp_path / "out" / "work_1gpu" / "checkpoints").is_dir()
