#!/usr/bin/env bash
# Reproduce docs/results.md and docs/results.json (issue 8): the paper's ablations on synthetic
# data and on MovieLens latest-small (event labels, and Teacher soft labels), 3 seeds each.
# About 40 minutes on 2 CPU cores. Usage: scripts/reproduce_study.sh [WORKDIR]   (default study_runs)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-study_runs}
M=${MATTA:-.venv/bin/matta}
export OMP_NUM_THREADS=1
ML_SRC=${ML_SRC:-../shared/data/ml-latest-small}

# synthetic: 12 days, settings chosen on other synthetic data (docs/tuning.md)
[[ -d $W/synth_data ]] || $M generate --out "$W/synth_data" --days 12 --rows-per-day 16000 --seed 1
mkdir -p "$W/synth" && cp docs/tuning.md "$W/synth/tuning.md"
$M study --spec feature_specs/synthetic.yaml --data "$W/synth_data" --out "$W/synth" --name synthetic \
  --seeds 3 --jobs 2 train.batch_size=256 loss.distill_ramp=300

# MovieLens: monthly partitions; the Teacher is fit on 1996-2014 and scores 2015-01..2018-09
[[ -d $W/ml_month ]] || $M convert movielens --input "$ML_SRC" --out "$W/ml_month" --period month
[[ -f $W/ml_teacher_model/teacher.json ]] || $M teacher fit --spec feature_specs/movielens.yaml \
  --data "$W/ml_month" --days 1996-03-01..2014-12-01 --out "$W/ml_teacher_model" --holdout-days 6
[[ -f $W/ml_teacher/spec.yaml ]] || $M teacher score --model "$W/ml_teacher_model" \
  --spec feature_specs/movielens.yaml --data "$W/ml_month" --days 2015-01-01..2018-09-01 --out "$W/ml_teacher"
ML_ARGS=(--days 2015-01-01..2018-09-01 --seeds 3 --jobs 2 train.batch_size=64 train.eval_batch_size=4096 loss.distill_ramp=50)
$M study --spec feature_specs/movielens.yaml --data "$W/ml_month" --out "$W/ml_event" --name movielens-event "${ML_ARGS[@]}"
$M study --spec "$W/ml_teacher/spec.yaml" --data "$W/ml_teacher" --out "$W/ml_teacher_study" --name movielens-teacher "${ML_ARGS[@]}"

$M study-report --datasets "synthetic=$W/synth,movielens-event=$W/ml_event,movielens-teacher=$W/ml_teacher_study" --out docs
