# All targets use a local .venv; `make test` and `make demo` install first (a no-op when current).
# `make test` also creates pipelines/.venv, the Airflow environment of the daily pipeline (its own
# venv: pipelines/requirements.txt), which the tests in tests/pipelines drive.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_run

.PHONY: install airflow-env test test-fast test-all demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh cpu
	touch $@

# Idempotent: the script leaves a venv whose stamp matches pipelines/requirements.txt alone.
airflow-env:
	bash scripts/airflow_env.sh

test: install airflow-env
	$(PY) -m pytest -q -p no:cacheprovider

# the unit tests: everything but the `slow` ones (CLI end to end, MLflow, several processes);
# a test that takes over 120 s fails instead of hanging
test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" --timeout=120

demo: install
	$(VENV)/bin/matta demo --workdir $(DEMO_DIR)

clean:
	rm -rf $(VENV) pipelines/.venv $(DEMO_DIR) .pytest_cache
