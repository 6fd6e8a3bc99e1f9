"""Thin entry point for schedulers: `python pipelines/daily.py --spec S --data ROOT --day D --workdir W`
(the same as `matta daily ...`; see recsys_matta/pipelines/daily.py)."""

import sys

from recsys_matta.cli import main

if __name__ == "__main__":
    main(["daily", *sys.argv[1:]])
