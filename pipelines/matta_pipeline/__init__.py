"""The daily pipeline on Airflow: settings (config.py) and task commands (tasks.py). No torch."""
