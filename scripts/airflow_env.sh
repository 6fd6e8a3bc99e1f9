#!/usr/bin/env bash
# Create pipelines/.venv, the daily pipeline's Airflow environment, from pipelines/requirements.txt.
# Idempotent: a venv whose stamp matches the requirements file is left alone (a no-op in ~0 s).
# Separate from .venv on purpose (see pipelines/requirements.txt). Usage: scripts/airflow_env.sh
# Env: AIRFLOW_VENV (default pipelines/.venv), PYTHON (default python3; Airflow 3.3 needs 3.10-3.13).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${AIRFLOW_VENV:-pipelines/.venv}
python=${PYTHON:-python3}
req=pipelines/requirements.txt
stamp=$venv/.installed
want=$(sha256sum "$req" | cut -d' ' -f1)

if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
if [[ ! -x $venv/bin/python ]]; then
  "$python" -m venv "$venv"
fi
start=$(date +%s)
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
# Fail here, not in the first test, if Airflow does not load.
"$venv/bin/python" -c "import airflow, airflow.providers.standard; print('airflow', airflow.__version__)"
echo "$want" > "$stamp"
echo "airflow env: $venv ready in $(( $(date +%s) - start )) s"
