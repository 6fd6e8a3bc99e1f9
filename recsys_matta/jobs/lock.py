"""One job per work directory: an OS file lock on `<workdir>/.lock`, held for the whole job.

`matta train` and `matta daily` (and what calls them: `matta demo`), `matta register` and
`matta gate` take it before they read a checkpoint and keep it until they return; a second job on the same work directory fails at once
(`WorkdirLocked`, exit 2) naming the holder's PID, instead of training the day twice and
registering two candidates. The lock is `fcntl.flock` on an open file: the kernel drops it when the
holding process exits in any way (a crash, SIGKILL, OOM), so a stale `.lock` file never blocks
a later job. The file's content (PID, host, command, start time) is only for the message.

Under torchrun rank 0 takes the lock for the job and every rank learns the outcome, so all ranks
of a refused job stop together (also when rank 0 cannot take it at all: a `UserError` naming
the lock file, on every rank).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from recsys_matta.errors import UserError

if TYPE_CHECKING:
    from recsys_matta.distributed.context import DistContext

LOCK_FILE = ".lock"


class WorkdirLocked(UserError):
    """Another job holds the work directory's lock (the message names its PID)."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096).decode(errors="replace").strip()
    try:
        info = json.loads(raw)
    except json.JSONDecodeError:
        return "PID unknown (it has not written its details yet)"
    return (
        f"PID {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
        f"{info.get('command')}"
    )


def try_lock(workdir: str | Path) -> tuple[int | None, str]:
    """(fd, "") with the lock taken (keep the fd open to hold it), or (None, holder details)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's details stay
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        return None, holder
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd, ""


@contextmanager
def workdir_lock(workdir: str | Path, ctx: "DistContext | None" = None) -> Iterator[None]:
    """Hold `<workdir>/.lock` for the block (rank 0 of `ctx` takes it; all ranks raise
    `WorkdirLocked` when it is held by another job)."""
    main = ctx is None or ctx.is_main
    fd, holder, failed = None, "", ""
    if main:
        try:
            fd, holder = try_lock(workdir)
        except OSError as e:  # e.g. an unwritable or non-directory workdir, no flock on its filesystem
            failed = f"{Path(workdir) / LOCK_FILE}: cannot take the work directory's lock: {e}"
    if ctx is not None and ctx.distributed:  # every rank learns rank 0's outcome, so all stop together
        holder, failed = ctx.all_gather_object((holder, failed))[0]
    if failed:
        raise UserError(failed)
    if holder:
        raise WorkdirLocked(
            f"{Path(workdir) / LOCK_FILE}: another job is running on this work directory "
            f"({holder}); wait for it to finish, or use another --workdir"
        )
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock
