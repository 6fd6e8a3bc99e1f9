"""Reader benchmark: throughput against raw Parquet decoding, and peak memory at 1x and 10x input.

    OMP_NUM_THREADS=1 python benchmarks/reader.py [--rows 2000000] [--batch-size 8192]

1. Writes one synthetic day of `--rows` rows with `feature_specs/synthetic.yaml`'s generator
   under `benchmarks/_data/` (reused when it is already there), and a 10x day made of 10 hard
   links (symlinks where links fail) to the same files (no extra disk, 10x the rows to read).
2. Throughput, best of `--repeats` interleaved rounds, in this process: (a) raw decode,
   `ParquetFile.iter_batches(batch_size)` over the spec's columns of every file (`ratio` is
   against this), and the same with the reader's larger read chunk (reported beside it);
   (b) `DayReader.iter_day` producing `Batch`es (prefetch on: a decode and an encode thread;
   the consumer does nothing but count rows), and the same with `prefetch=0` (everything in
   the calling thread, reported as `reader_sync_rows_per_s`).
3. Peak RSS of a fresh child process that reads the 1x day, and one that reads the 10x day,
   with the reader: bounded memory means the two are about equal. The child imports torch /
   torchrec first, then resets the kernel's peak mark (`/proc/self/clear_refs`), so the figure
   is the process's peak RSS while reading (imports' resident memory included, their transient
   spike not); where that reset is not allowed it falls back to `ru_maxrss`.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEC = REPO / "feature_specs" / "synthetic.yaml"
DAY = "2026-01-01"


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so imports do not count (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _day_rows(root: Path) -> int:
    import pyarrow.parquet as pq

    folder = root / f"day={DAY}"
    if not folder.is_dir():
        return -1
    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(folder.glob("*.parquet")))


def prepare(data: Path, rows: int, scale: int) -> tuple[Path, Path]:
    """The 1x and `scale`x roots (created unless already there with the right row counts)."""
    from recsys_matta.data.synthetic import generate

    base, big = data / f"reader_{rows}", data / f"reader_{rows}_x{scale}"
    if _day_rows(base) != rows:
        generate(
            out=base, days=1, rows_per_day=rows, seed=0, start_date=date.fromisoformat(DAY),
            progress=False,
        )
    if _day_rows(big) != rows * scale:
        folder = big / f"day={DAY}"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for copy in range(scale):
            for src in sorted((base / f"day={DAY}").glob("*.parquet")):
                dst = folder / f"copy{copy:02d}-{src.name}"
                try:
                    os.link(src, dst)
                except OSError:
                    dst.symlink_to(src.resolve())
    return base, big


def raw_decode(root: Path, columns: list[str], batch_size: int) -> int:
    import pyarrow.parquet as pq

    n = 0
    for path in sorted((root / f"day={DAY}").glob("*.parquet")):
        for rb in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            n += rb.num_rows
    return n


def read_batches(root: Path, batch_size: int, prefetch: int = 2) -> int:
    from recsys_matta.data.reader import DayReader
    from recsys_matta.specs import load_spec

    reader = DayReader(load_spec(SPEC), root, batch_size, prefetch=prefetch)
    return sum(b.size for b in reader.iter_day(DAY))


def best_rates(fns: list, repeats: int) -> list[tuple[int, float]]:
    """Best rows/s of each function over `repeats` rounds, run interleaved (a busy machine
    slows both alike)."""
    best = [(0, 0.0)] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            rows = fn()
            rate = rows / (time.perf_counter() - t)
            best[i] = (rows, max(best[i][1], rate))
    return best


def child_rss(root: Path, batch_size: int) -> dict:
    """Peak RSS of a fresh process that imports the stack and reads the day with the reader."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(root), "--batch-size", str(batch_size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def child_main(root: Path, batch_size: int) -> None:
    import torch  # noqa: F401  (the imports are part of the baseline, not of the reader)
    import torchrec  # noqa: F401

    from recsys_matta.data import reader  # noqa: F401

    reset = _reset_peak_rss()
    before = _status_mb("VmRSS") or 0.0
    rows = read_batches(root, batch_size)
    print(
        json.dumps(
            {
                "rows": rows,
                "rss_after_import_mb": before,
                "peak_rss_mb": _peak_rss_mb(),
                "rss_method": "VmHWM after clear_refs" if reset else "ru_maxrss (with imports)",
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=REPO / "benchmarks" / "_data")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child_main(args.child, args.batch_size)
        return

    import numpy
    import pyarrow
    import torch
    import torchrec

    from recsys_matta.data.encode import needed_columns
    from recsys_matta.data.reader import DayReader
    from recsys_matta.specs import load_spec

    base, big = prepare(args.data, args.rows, args.scale)
    columns = needed_columns(load_spec(SPEC))
    chunk = DayReader.__init__.__kwdefaults__["read_rows"]  # the reader's Parquet chunk size
    (rows, raw), (_, raw_chunk), (rows_r, rdr), (_, sync) = best_rates(
        [
            lambda: raw_decode(base, columns, args.batch_size),
            lambda: raw_decode(base, columns, chunk),
            lambda: read_batches(base, args.batch_size),
            lambda: read_batches(base, args.batch_size, prefetch=0),
        ],
        args.repeats,
    )
    assert rows_r == rows, (rows_r, rows)
    small, large = child_rss(base, args.batch_size), child_rss(big, args.batch_size)
    assert large["rows"] == args.scale * rows
    print(
        json.dumps(
            {
                "rows": rows,
                "batch_size": args.batch_size,
                "raw_rows_per_s": round(raw),
                "reader_rows_per_s": round(rdr),
                "ratio": round(rdr / raw, 3),
                "raw_rows_per_s_reader_chunk": round(raw_chunk),
                "reader_chunk_rows": chunk,
                "ratio_vs_raw_reader_chunk": round(rdr / raw_chunk, 3),
                "reader_sync_rows_per_s": round(sync),
                "ratio_sync_vs_raw_reader_chunk": round(sync / raw_chunk, 3),
                "peak_rss_mb": round(small["peak_rss_mb"], 1),
                "peak_rss_mb_10x": round(large["peak_rss_mb"], 1),
                "rows_10x": large["rows"],
                "rss_after_import_mb": round(small["rss_after_import_mb"], 1),
                "rss_method": small["rss_method"],
                "cpu_count": os.cpu_count(),
                "cpu_affinity": len(os.sched_getaffinity(0)),
                "arrow_cpu_count": pyarrow.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torchrec": torchrec.__version__,
                "pyarrow": pyarrow.__version__,
                "numpy": numpy.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
