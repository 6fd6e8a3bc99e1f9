"""Jobs that wire the library: the daily pipeline, Mix'n'Match report, compare, demo.
(`pipelines/*.py` at the repo root are thin entry points into these.)"""
