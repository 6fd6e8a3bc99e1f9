"""How much of MLflow's own chatter reaches the job's output.

A job's console is one line per event (a day trained, a gate decision, a version registered);
MLflow adds INFO lines of its own ("Creating initial MLflow database tables...", "Validating
input example against model signature") and prints registry messages straight to stderr
("Successfully registered model ...", "Created version '3' of model ..."), which say again what
the job's own line says. `quiet_mlflow(True)` (the CLI default) keeps MLflow at WARNING and drops
those registry prints; `matta --verbose ...` or `MATTA_VERBOSE=1` shows them, and an explicit
`MLFLOW_LOGGING_LEVEL` is always respected. Warnings and errors always come through.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Iterator

_QUIET = [False]
_CHATTER = re.compile(
    r"^(Successfully registered model '.*'\.|Registered model '.*' already exists\. Creating a new "
    r"version of this model\.\.\.|Created version '\d+' of model '.*'\.?)$"
)


def quiet_mlflow(quiet: bool = True) -> None:
    """MLflow's INFO lines and registry prints off (`quiet`) or on."""
    _QUIET[0] = quiet
    if "MLFLOW_LOGGING_LEVEL" in os.environ and os.environ.get("MATTA_SET_MLFLOW_LEVEL") != "1":
        return  # the user's own choice
    level = "WARNING" if quiet else "INFO"
    os.environ["MLFLOW_LOGGING_LEVEL"] = level  # read when mlflow is imported (later)
    os.environ["MATTA_SET_MLFLOW_LEVEL"] = "1"
    if "mlflow" in sys.modules:  # already configured: set the logger itself
        logging.getLogger("mlflow").setLevel(level)


@contextlib.contextmanager
def registry_chatter_dropped() -> Iterator[None]:
    """Around an MLflow registry call: its "Successfully registered" / "Created version" prints
    are dropped when quiet; anything else it writes to stderr is passed on."""
    if not _QUIET[0]:
        yield
        return
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            yield
    finally:
        kept = [ln for ln in buf.getvalue().splitlines() if ln.strip() and not _CHATTER.match(ln.strip())]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")
