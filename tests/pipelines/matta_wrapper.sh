#!/usr/bin/env bash
# The tests' stand-in for `matta` (pipelines config `matta.executable`): records every call in
# $CALLS_LOG and runs the real $REAL_MATTA. On the FIRST `--stage train --day $KILL_DAY` it
# SIGKILLs the job as soon as the day's checkpoint is on disk (the day is trained, but the task
# dies before reporting success, e.g. a preempted node) and exits 137, so Airflow retries it.
set -uo pipefail
stage=- day=-
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --stage) stage=${args[i + 1]} ;;
    --day) day=${args[i + 1]} ;;
  esac
done
[[ ${args[0]:-} == day-ready ]] && stage=sensor
echo "start $stage $day $(date +%s.%N)" >> "$CALLS_LOG"
if [[ $stage == train && $day == "${KILL_DAY:-}" && ! -e $KILL_MARK ]]; then
  touch "$KILL_MARK"
  "$REAL_MATTA" "$@" &
  pid=$!
  ckpt="$KILL_WORKDIR/checkpoints/day=$day.pt"
  while kill -0 "$pid" 2>/dev/null && [[ ! -e $ckpt ]]; do sleep 0.02; done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  echo "killed $stage $day $(date +%s.%N) checkpoint=$([[ -e $ckpt ]] && echo yes || echo no)" >> "$CALLS_LOG"
  exit 137
fi
"$REAL_MATTA" "$@"
rc=$?
echo "end $stage $day $rc $(date +%s.%N)" >> "$CALLS_LOG"
exit $rc
