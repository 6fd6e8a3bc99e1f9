#!/usr/bin/env bash
# Reproduce docs/results.md and docs/results.json: the paper's ablations (Table 3 / Table 4 shape)
# and the elastic-Student frontier per training rule (sandwich default, two end points, random
# sub-networks) on two synthetic datasets and MovieLens latest-small with Teacher soft labels,
# 3 seeds each. Measured on 2 shared CPU cores (load 2-4): `synthetic` ~25 min, `synthetic-200k`
# ~24 min (3 arms), `movielens-teacher` ~5 min. Usage: scripts/reproduce_study.sh [WORKDIR]
# (default study_runs). WITH_MOVIELENS_EVENT=1 also runs MovieLens on the event label alone.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-study_runs}
M=${MATTA:-.venv/bin/matta}
export OMP_NUM_THREADS=1
ML_SRC=${ML_SRC:-../shared/data/ml-latest-small}

# synthetic: the shipped defaults, nothing overridden (batch 256), every arm
[[ -d $W/synth_data ]] || $M generate --out "$W/synth_data" --days 8 --rows-per-day 50000 --seed 1
mkdir -p "$W/synth" && cp docs/tuning.md "$W/synth/tuning.md"
# MatTA w/o Shampoo gets its own Adam lr: 1e-3 was best of 3e-4/1e-3/3e-3/1e-2 (seed 0, see docs/results.md)
$M study --spec feature_specs/synthetic.yaml --data "$W/synth_data" --out "$W/synth" --name synthetic --seeds 3 --jobs 2 \
  --arms shampoo_only,matta_shampoo,matta_shampoo_endpoints,matta_shampoo_random,matta_adam --adam-lr 1e-3

# synthetic-200k: issue 12's regime (8 days x 200k rows, generator seed 0, batch 1024)
[[ -d $W/synth200k_data ]] || $M generate --out "$W/synth200k_data" --days 8 --rows-per-day 200000 --seed 0
$M study --spec feature_specs/synthetic.yaml --data "$W/synth200k_data" --out "$W/synth200k" --name synthetic-200k \
  --seeds 3 --jobs 2 --arms shampoo_only,matta_shampoo,matta_shampoo_endpoints train.batch_size=1024

DATASETS="synthetic=$W/synth,synthetic-200k=$W/synth200k"
# MovieLens: monthly partitions; the Teacher is fit on 1996-2014 and scores 2015-01..2018-09
[[ -d $W/ml_month ]] || $M convert movielens --input "$ML_SRC" --out "$W/ml_month" --period month
[[ -f $W/ml_teacher_model/teacher.json ]] || $M teacher fit --spec feature_specs/movielens.yaml \
  --data "$W/ml_month" --days 1996-03-01..2014-12-01 --out "$W/ml_teacher_model" --holdout-days 6
[[ -f $W/ml_teacher/spec.yaml ]] || $M teacher score --model "$W/ml_teacher_model" \
  --spec feature_specs/movielens.yaml --data "$W/ml_month" --days 2015-01-01..2018-09-01 --out "$W/ml_teacher"
ML_ARGS=(--days 2015-01-01..2018-09-01 --seeds 3 --jobs 2 --arms shampoo_only,matta_shampoo,matta_shampoo_endpoints
  train.batch_size=64 train.eval_batch_size=4096 loss.distill_ramp=50)
$M study --spec "$W/ml_teacher/spec.yaml" --data "$W/ml_teacher" --out "$W/ml_teacher_study" --name movielens-teacher "${ML_ARGS[@]}"
DATASETS="$DATASETS,movielens-teacher=$W/ml_teacher_study"
if [[ ${WITH_MOVIELENS_EVENT:-0} == 1 ]]; then
  $M study --spec feature_specs/movielens.yaml --data "$W/ml_month" --out "$W/ml_event" --name movielens-event "${ML_ARGS[@]}"
  DATASETS="$DATASETS,movielens-event=$W/ml_event"
fi

$M study-report --datasets "$DATASETS" --out docs
