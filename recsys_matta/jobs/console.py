"""The jobs' console: one event, one line.

Every message a job prints (a day trained, a gate decision, a registered version) is one line,
however long, so scheduler logs can be grepped line by line: the console never wraps printed
text (`soft_wrap=True`; tables still lay out to the width). 120 columns when not a terminal (CI
logs, schedulers) so the tables fit.
"""

from __future__ import annotations

import sys

from rich.console import Console


def job_console() -> Console:
    if sys.stdout.isatty():
        return Console(soft_wrap=True)
    return Console(width=120, soft_wrap=True)
