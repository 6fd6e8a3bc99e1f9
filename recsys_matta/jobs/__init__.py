"""Jobs that wire the library, one module each: `matta train` (train), the daily pipeline
(daily), register / compare / extract on a run directory (commands), the demo (demo), and
their shared pieces: scoring whole days (scoring) and the Mix'n'Match report (mixnmatch)."""
