"""Loading torch files without running code from them.

Every `.pt` file this package reads (the served Student's weights, the trainer's checkpoints, a
baseline checkpoint) goes through `load_tensors`: `torch.load(weights_only=True)`, which only
rebuilds tensors, numbers, strings and containers. There is no fallback to a full unpickle: a
file that needs anything else (a pickled module, a planted `__reduce__` payload) is refused with
`UnsafeFileError`, naming the file and the globals it asked for. Nothing in it runs: torch's
restricted unpickler stops at the first global it does not allow, before calling anything.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from recsys_matta.errors import UserError


class UnsafeFileError(UserError):
    """A file would need a full unpickle (code execution) to load; it is refused."""


def _globals_of(path: Path, error: Exception) -> list[str]:
    """The globals the file's pickle asks for (read from its opcodes; nothing runs). A file
    that is not a torch zip (a bare pickle): the one torch's error names."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - not a torch zip file
        return re.findall(r"GLOBAL ([\w.]+)", str(error))[:1]


def load_tensors(
    path: str | Path, what: str, *, allow: Iterable[Any] = (), pickled_module_hint: str = ""
) -> Any:
    """`torch.load(path, weights_only=True)` on CPU, with `allow` (extra safe globals) in scope.

    Args:
        path: the file.
        what: what the file is meant to be (for the messages, e.g. "model weights").
        allow: extra globals allowed for this load only (`torch.serialization.safe_globals`).
        pickled_module_hint: appended to the error when the file holds a pickled
            `recsys_matta` / `torch.nn` object (an artifact of an older version).

    Raises:
        UnsafeFileError: the file needs other globals (the message names the file and them).
        Any error torch raises for an unreadable file (truncated zip, ...), unchanged.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise  # a damaged file, not a refused one
        names = _globals_of(path, e)
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") if names else "unknown"
        msg = (
            f"{path}: refused to load {what}: the file is not plain tensors/JSON-able data "
            f"(it asks for {shown}); loading it would run code from the file"
        )
        if pickled_module_hint and any(n.startswith(("recsys_matta.", "torch.nn.")) for n in names):
            msg += f". {pickled_module_hint}"
        raise UnsafeFileError(msg) from None
