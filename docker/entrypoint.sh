#!/usr/bin/env bash
# Entry point of the GPU image: runs the daily MatTA job for one day under torchrun.
#
#   matta-entrypoint [key=value ...] [--flag ...]   -> torchrun ... -m recsys_matta daily ... "$@"
#   matta-entrypoint <command> [args ...]           -> exec <command> (e.g. `matta generate ...`, bash)
#
# Environment (defaults in brackets):
#   SPEC           feature spec YAML            [/opt/recsys-matta/feature_specs/synthetic.yaml]
#   DATA           partition root (day=YYYY-MM-DD/*.parquet)                      [/data]
#   DAY            day to train, YYYY-MM-DD                                [yesterday, UTC]
#   WORKDIR        checkpoints, run state, embedded MLflow db                     [/workdir]
#   NPROC          processes (GPUs) on this node                 [number of visible GPUs, or 1]
#   NNODES         nodes in the job; >1 uses c10d rendezvous                            [1]
#   RDZV_ENDPOINT  host:port of the rendezvous (any one node), needed when NNODES > 1
#   RDZV_ID        job id shared by all nodes                                 [matta-$DAY]
#   MLFLOW_TRACKING_URI  tracking server; unset = sqlite:///$WORKDIR/mlflow.db (embedded default)
set -euo pipefail

log() { echo "[matta-entrypoint] $*" >&2; }

# Anything that is not an override (key=value) or a flag is a command to run instead of the job.
if [[ $# -gt 0 && $1 != -* && $1 != *=* ]]; then
  exec "$@"
fi

SPEC=${SPEC:-/opt/recsys-matta/feature_specs/synthetic.yaml}
DATA=${DATA:-/data}
WORKDIR=${WORKDIR:-/workdir}
DAY=${DAY:-$(date -u -d yesterday +%F)}
NNODES=${NNODES:-1}

if [[ ! $DAY =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]]; then
  log "error: DAY=$DAY is not YYYY-MM-DD"; exit 2
fi
if [[ ! -f $SPEC ]]; then
  log "error: SPEC=$SPEC: no such file (mount your spec and set SPEC)"; exit 2
fi
if [[ $DATA != *://* && ! -d $DATA ]]; then
  log "error: DATA=$DATA: no such directory (mount the partition root and set DATA)"; exit 2
fi
mkdir -p "$WORKDIR"
if command -v mountpoint >/dev/null && ! mountpoint -q "$WORKDIR" && [[ $WORKDIR == /workdir ]]; then
  log "warning: $WORKDIR is not a mounted volume; checkpoints are lost when the container exits"
fi

if [[ -z ${NPROC:-} ]]; then
  # torch sees CUDA_VISIBLE_DEVICES; nvidia-smi -L would not.
  NPROC=$(python -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
  if [[ $NPROC -lt 1 ]]; then
    log "warning: no CUDA device visible; running 1 process on CPU"
    NPROC=1
  fi
fi

if [[ $NNODES -gt 1 ]]; then
  : "${RDZV_ENDPOINT:?NNODES=$NNODES needs RDZV_ENDPOINT=host:port (same on every node)}"
  # c10d assigns node ranks itself (torchrun ignores --node-rank unless the backend is static).
  launch=(--nnodes "$NNODES" --rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT"
          --rdzv-id "${RDZV_ID:-matta-$DAY}")
else
  launch=(--standalone --nnodes 1)
fi

log "day=$DAY spec=$SPEC data=$DATA workdir=$WORKDIR nnodes=$NNODES nproc_per_node=$NPROC" \
    "tracking=${MLFLOW_TRACKING_URI:-sqlite:///$WORKDIR/mlflow.db}"
exec torchrun "${launch[@]}" --nproc-per-node "$NPROC" -m recsys_matta daily \
  --spec "$SPEC" --data "$DATA" --day "$DAY" --workdir "$WORKDIR" "$@"
