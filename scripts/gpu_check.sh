#!/usr/bin/env bash
# One-shot check of recsys-matta on a GPU machine. Prints ONE JSON line on stdout (progress goes to
# stderr, full logs to OUT/logs/). A failing step is recorded in the JSON; later steps still run.
#
#   scripts/gpu_check.sh [OUT]            (default OUT: /tmp/recsys_matta_gpu_check)
#   scripts/gpu_check.sh --quick [OUT]    (about 8 minutes on one GPU with a ready venv)
#
# Quick mode: no pytest, no multi-GPU run; 2 days x 50,000 rows through the daily job on GPU 0
# (the one engine: DMP + FBGEMM fused tables), then the step benchmark (batch 1024, MatTA+Adam vs
# MatTA+Shampoo, table sweep 50k / 2M rows, 3 rounds), each step time-limited so the whole fits
# 8 minutes; its JSON line adds `pass` and `checks` (each value against its expected range:
# daily ok, last day's Student AucLoss in (0, 0.45), 2M-row step <= 1.15x the 50k step,
# shampoo_over_adam <= 1.5 at the largest timed batch). Without a GPU it runs the same steps on
# the CPU and reports `ok: false` (tests/test_gpu_check.py runs it so, with tiny sizes).
#
# Steps: venv (reuse one whose torch sees CUDA, else `scripts/install.sh gpu` into .venv-gpu),
# env (versions), pytest -m gpu, generate (3 days x ROWS_PER_DAY rows), daily_1gpu (the daily job
# on GPU 0, one process, each day in order), daily_multi (same under torchrun on all GPUs, if > 1),
# benchmark (benchmarks/train_step.py --device cuda). About 5-10 minutes with a ready venv.
# Exit status 0 only when a GPU was seen and every step that ran passed.
#
# Environment: VENV (venv to use or create), TORCH_INDEX_URL (CUDA index for the install, e.g.
# https://download.pytorch.org/whl/cu126), ROWS_PER_DAY [200000], DAYS [3], SPEC
# [feature_specs/synthetic.yaml], DAILY_ARGS / BENCH_ARGS (extra args, shell-split),
# TIMEOUT_<STEP> seconds per step (INSTALL 1200, PYTEST 300, GENERATE 180, DAILY 300, BENCH 180).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

quick=0
if [[ ${1:-} == --quick ]]; then
  quick=1
  shift
  : "${ROWS_PER_DAY:=50000}" "${DAYS:=2}" "${TIMEOUT_INSTALL:=60}" "${TIMEOUT_GENERATE:=60}"
  : "${TIMEOUT_DAILY:=100}" "${TIMEOUT_BENCH:=180}"  # per day; 60 + 2 x 100 + 180 s at most
  # the bf16 variant: the model's forward under autocast (train.precision=bfloat16), never yet timed on a GPU
  : "${BENCH_ARGS:=--batch-sizes 1024 --arms matta_adam,matta_shampoo --rounds 3 --table-rows 50000,2000000 --sweep-batch 1024 --variant bf16=train.precision=bfloat16}"
  export ROWS_PER_DAY DAYS TIMEOUT_INSTALL TIMEOUT_GENERATE TIMEOUT_DAILY TIMEOUT_BENCH BENCH_ARGS
fi
out=${1:-${GPU_CHECK_OUT:-/tmp/recsys_matta_gpu_check}}
mkdir -p "$out/logs"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
gpus=${gpus:-0}

# A venv is usable when the stack imports and, on a machine with GPUs, torch can use them.
usable() {
  [[ -x $1/bin/python ]] && NEED_CUDA=$(( gpus > 0 )) "$1/bin/python" -c '
import os, sys, torch, fbgemm_gpu, torchrec, recsys_matta
sys.exit(0 if torch.cuda.is_available() or os.environ["NEED_CUDA"] == "0" else 1)' >/dev/null 2>&1
}

venv="" install=reused install_s=0
for candidate in ${VENV:+"$VENV"} .venv-gpu .venv; do
  if usable "$candidate"; then venv=$candidate; break; fi
done
if [[ -z $venv ]]; then
  venv=${VENV:-.venv-gpu}
  echo "[gpu_check] installing the GPU stack into $venv (log: $out/logs/install.log)" >&2
  start=$SECONDS
  if timeout "${TIMEOUT_INSTALL:-1200}" env VENV="$venv" bash scripts/install.sh gpu \
      >"$out/logs/install.log" 2>&1 && usable "$venv"; then
    install=installed
  else
    install=failed
  fi
  install_s=$(( SECONDS - start ))
fi
py=$venv/bin/python
[[ -x $py ]] || py=$(command -v python3)   # still report, even without a venv

export GPU_CHECK_QUICK=$quick GPU_CHECK_OUT=$out GPU_CHECK_VENV=$venv GPU_CHECK_INSTALL=$install \
  GPU_CHECK_INSTALL_S=$install_s GPU_CHECK_NVIDIA_SMI_GPUS=$gpus
exec "$py" - <<'GPU_CHECK_PY'
"""Runs the check steps and prints the one JSON line."""
import json, os, re, shlex, signal, socket, subprocess, sys, time
from pathlib import Path

OUT = Path(os.environ["GPU_CHECK_OUT"])
LOGS = OUT / "logs"
PY = sys.executable
SPEC = os.environ.get("SPEC", "feature_specs/synthetic.yaml")
ROWS, DAYS = int(os.environ.get("ROWS_PER_DAY", 200_000)), int(os.environ.get("DAYS", 3))
DAILY_ARGS = shlex.split(os.environ.get("DAILY_ARGS", ""))
BENCH_ARGS = shlex.split(os.environ.get("BENCH_ARGS", ""))
QUICK = os.environ.get("GPU_CHECK_QUICK") == "1"
T0 = time.monotonic()


def timeout(step: str, default: int) -> int:
    return int(os.environ.get(f"TIMEOUT_{step}", default))


def log(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


def last_json(text: str):
    """The last stdout line that is a JSON object (what benchmarks and the job print), or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run(name: str, cmd: list[str], limit: int, env: dict | None = None) -> dict:
    """Run cmd in its own process group (so torchrun's workers die with it) with a time limit."""
    path = LOGS / f"{name}.log"
    start = time.monotonic()
    with open(path, "w") as fh:
        fh.write("$ " + shlex.join(cmd) + "\n")
        fh.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
        except OSError as e:
            return {"ok": False, "rc": None, "s": 0.0, "error": str(e), "log": str(path)}
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            rc = "timeout"
    text = path.read_text(errors="replace")
    rec = {"ok": rc == 0, "rc": rc, "s": round(time.monotonic() - start, 1), "log": str(path)}
    if rc != 0:
        lines = [ln.strip(" \u2502\u256d\u256e\u2570\u256f\u2500") for ln in text.splitlines()]
        rec["tail"] = [ln[-300:] for ln in lines if ln][-3:]  # (rich's error boxes stripped)
    rec["json"] = last_json(text)
    log(f"{name}: {'ok' if rec['ok'] else 'FAILED rc=' + str(rc)} in {rec['s']}s")
    return rec


def skip(reason: str) -> dict:
    return {"ok": None, "skipped": reason}


def daily(name: str, launcher: list[str], days: list[str], workdir: Path, env: dict) -> dict:
    """The daily job for each day in order (eval on the day, then train on it), one step record."""
    per_day = []
    for day in days:
        cmd = [*launcher, "-m", "recsys_matta", "daily", "--spec", SPEC, "--data", str(OUT / "data"),
               "--day", day, "--workdir", str(workdir), *DAILY_ARGS]
        rec = run(f"{name}_{day}", cmd, timeout("DAILY", 300), env)
        per_day.append({"day": day, **{k: rec[k] for k in ("ok", "s", "json") if k in rec}})
        if not rec["ok"]:
            return {**rec, "days": per_day}
    return {"ok": True, "s": round(sum(d["s"] for d in per_day), 1), "days": per_day}


steps: dict[str, dict] = {}
install = os.environ["GPU_CHECK_INSTALL"]
steps["venv"] = {"ok": install != "failed", "status": install, "venv": os.environ["GPU_CHECK_VENV"],
                 "s": float(os.environ["GPU_CHECK_INSTALL_S"])}
if install == "failed":
    steps["venv"]["log"] = str(LOGS / "install.log")

probe = ("import json, torch, fbgemm_gpu, torchrec; c = torch.cuda.is_available(); print(json.dumps({"
         "'torch': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': c,"
         "'gpu_count': torch.cuda.device_count() if c else 0,"
         "'gpu': torch.cuda.get_device_name(0) if c else None,"
         "'fbgemm_gpu': getattr(fbgemm_gpu, '__version__', None), 'torchrec': torchrec.__version__}))")
steps["env"] = run("env", [PY, "-c", probe], 120)
env_info = steps["env"].get("json") or {}
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True) if int(os.environ["GPU_CHECK_NVIDIA_SMI_GPUS"]) else None
gpus = [ln.strip() for ln in smi.stdout.splitlines() if ln.strip()] if smi and smi.returncode == 0 else []
n_gpu = int(env_info.get("gpu_count") or 0)

if install == "failed":
    for name in ("pytest_gpu", "generate", "daily_1gpu", "daily_multi", "benchmark"):
        steps[name] = skip("no usable venv (install failed)")
else:
    if QUICK:
        steps["pytest_gpu"] = skip("quick mode")
    else:
        rec = run("pytest_gpu", [PY, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
                  timeout("PYTEST", 300))
        lines = Path(rec["log"]).read_text(errors="replace").splitlines()
        summary = [ln for ln in lines if re.search(r"\b(passed|failed|skipped|deselected|errors?|no tests ran)\b.* in [\d.]+s", ln)]
        rec["summary"] = summary[-1].strip("= ") if summary else None
        if rec["rc"] == 5:  # pytest: no tests collected
            rec.update(ok=True, note="no tests marked gpu")
            log("pytest_gpu: no tests marked gpu (counted as ok)")
        rec.pop("json", None)
        steps["pytest_gpu"] = rec

    steps["generate"] = run("generate", [PY, "-m", "recsys_matta", "generate", "--out", str(OUT / "data"),
                                         "--days", str(DAYS), "--rows-per-day", str(ROWS), "--seed", "0"],
                            timeout("GENERATE", 180))
    days = sorted(p.name.split("=", 1)[1] for p in (OUT / "data").glob("day=*") if p.is_dir())
    if not steps["generate"]["ok"] or not days:
        steps["daily_1gpu"] = steps["daily_multi"] = skip("no generated data")
    else:
        steps["daily_1gpu"] = daily("daily_1gpu", [PY], days, OUT / "work_1gpu",
                                    {"CUDA_VISIBLE_DEVICES": "0"} if n_gpu else {})
        if QUICK:
            steps["daily_multi"] = skip("quick mode")
        elif n_gpu > 1:
            torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n_gpu)]
            steps["daily_multi"] = daily("daily_multi", torchrun, days, OUT / f"work_{n_gpu}gpu", {})
        else:
            steps["daily_multi"] = skip(f"{n_gpu} GPU visible")

    bench = Path("benchmarks/train_step.py")
    if bench.is_file():
        device = "cuda" if n_gpu else "cpu"
        steps["benchmark"] = run("benchmark", [PY, str(bench), "--device", device, *BENCH_ARGS],
                                 timeout("BENCH", 180), {"CUDA_VISIBLE_DEVICES": "0"} if n_gpu else {})
    else:
        steps["benchmark"] = skip(f"{bench} not found")


def quick_checks() -> dict:
    """Quick mode's expected ranges: {name: {"value": ..., "ok": bool}} (a missing value fails)."""
    def check(value, lo, hi):
        return {"value": value, "ok": value is not None and lo < value <= hi}

    last = None
    metrics = OUT / "work_1gpu" / "metrics.jsonl"
    if metrics.is_file() and metrics.read_text().strip():
        last = json.loads(metrics.read_text().strip().splitlines()[-1])
    bench = steps.get("benchmark", {}).get("json") or {}
    sweep = ((bench.get("table_sweep") or {}).get("rows") or {}).get("2000000") or {}
    results = bench.get("results") or {}
    batch = max(results, key=int, default=None)  # the largest timed batch (1024 in quick mode)
    ratio = results[batch].get("shampoo_over_adam") if batch else None
    return {
        "daily_ok": {"value": steps.get("daily_1gpu", {}).get("ok"), "ok": steps.get("daily_1gpu", {}).get("ok") is True},
        "student_auc_loss": check(last and last["student"]["auc_loss"], 0.0, 0.45),
        "step_2m_over_50k": check(sweep.get("step_over_first"), 0.0, 1.15),
        "shampoo_over_adam": {**check(ratio, 0.0, 1.5), "batch": batch and int(batch)},
    }


ran = [s for s in steps.values() if s.get("ok") is not None]
report = {
    "check": "recsys-matta-gpu",
    "ok": bool(n_gpu) and all(s["ok"] for s in ran),
    "host": socket.gethostname(),
    "gpu": env_info.get("gpu"),
    "gpu_count": n_gpu,
    "nvidia_smi": gpus,
    **{k: env_info.get(k) for k in ("torch", "cuda", "fbgemm_gpu", "torchrec")},
    "rows_per_day": ROWS,
    "days": DAYS,
    "steps_ok": sum(1 for s in ran if s["ok"]),
    "failed": [k for k, s in steps.items() if s.get("ok") is False],
    "skipped": [k for k, s in steps.items() if s.get("ok") is None],
    "steps": steps,
    "total_s": round(time.monotonic() - T0 + float(os.environ["GPU_CHECK_INSTALL_S"]), 1),
    "out": str(OUT),
}
if QUICK:
    report["checks"] = quick_checks()
    report["pass"] = report["ok"] = report["ok"] and all(c["ok"] for c in report["checks"].values())
if not n_gpu:
    report["error"] = "no CUDA device visible to torch"
print(json.dumps(report, default=str), flush=True)
sys.exit(0 if report["ok"] else 1)
GPU_CHECK_PY
