"""Stable 64-bit hashing of sparse ids, vectorised (no per-row Python).

The bucket of a value depends only on the value, never on the process, machine or Python's hash
seed: integers go through the SplitMix64 finaliser, strings through 64-bit FNV-1a over their
UTF-8 bytes followed by the same finaliser. Training (reader) and serving (pyfunc) both call
`hash_to_buckets`, so they cannot drift.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of uint64 values (wrapping arithmetic). (N,) -> (N,) uint64."""
    z = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def hash_int64(values: np.ndarray) -> np.ndarray:
    """Stable hash of integer ids. (N,) int -> (N,) uint64."""
    return splitmix64(np.asarray(values).astype(np.int64).view(np.uint64))


def hash_strings(arr: pa.Array) -> np.ndarray:
    """Stable hash of a (non-null) arrow string array: FNV-1a over UTF-8 bytes, then SplitMix64.

    Vectorised over rows: one numpy pass per byte position (ids are short), not per row.
    """
    arr = arr.cast(pa.large_string()) if not pa.types.is_large_string(arr.type) else arr
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    max_len = int(lengths.max()) if n else 0
    with np.errstate(over="ignore"):
        for i in range(max_len):
            live = lengths > i
            idx = np.nonzero(live)[0] if not live.all() else slice(None)
            byte = data[starts[idx] + i].astype(np.uint64)
            h[idx] = (h[idx] ^ byte) * _FNV_PRIME
    return splitmix64(h)


def hash_array(arr: pa.Array) -> np.ndarray:
    """Stable hash of a non-null arrow array of integers or strings. (N,) -> (N,) uint64."""
    if pa.types.is_integer(arr.type):
        return hash_int64(arr.to_numpy(zero_copy_only=False))
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return hash_strings(arr)
    if pa.types.is_dictionary(arr.type):
        return hash_array(pc.cast(arr, arr.type.value_type))
    raise TypeError(f"cannot hash ids of type {arr.type}; expected integers or strings")


def hash_to_buckets(arr: pa.Array, buckets: int) -> np.ndarray:
    """Bucket index in [0, buckets) of every value. (N,) -> (N,) int64."""
    return (hash_array(arr) % np.uint64(buckets)).astype(np.int64)
