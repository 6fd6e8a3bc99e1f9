"""MLflow "models from code" entry point of the servable Student (see `pyfunc.py`).

`log_student` logs this file instead of a pickled object; loading the model runs it, which
imports `StudentPyfunc` from the installed package and hands MLflow an instance.
"""

import mlflow.models

from recsys_matta.serving.pyfunc import StudentPyfunc

mlflow.models.set_model(StudentPyfunc())
