"""One process per experiment: `train`, `sample`, `evaluate` and `quality` of one experiment
never run at the same time.

Two trainings of one experiment at once resumed each other's checkpoints and wrote into one
MLflow run (or made two runs and two registry versions); DVC's own lock only covers `dvc
repro`, not a `dcganlab train` started beside it. The lock is an OS file lock (`flock`) on
`models/<exp>/experiment.lock`:

- the kernel releases it when its process ends, however it ends (SIGKILL, OOM killer), so a
  stale lock cannot exist: the next start simply takes it;
- the file is never deleted (deleting it would let a waiting process lock a file nobody else
  sees) and lies beside the state folder, not in it (a fresh training deletes that folder);
- it holds the holder's stage, PID, host and start time, written in place on the locked file
  (not atomically replaced: a new inode would be a new, unheld lock), for the refusal message;
- a second start does not wait: it exits 1 naming the holder.

Under torchrun only rank 0 takes it (one lock per training). Without `fcntl` (Windows) there
is no lock. Over NFS, `flock` is emulated with `fcntl` byte-range locks (Linux >= 2.6.12).
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dcganlab.core import paths
from dcganlab.core.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no lock
    fcntl = None


def lock_path(root: Path, experiment: str) -> Path:
    return paths.model_dir(root, experiment) / "experiment.lock"


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the file (it may not have written yet)."""
    for _ in range(20):
        raw = os.pread(fd, 4096, 0)
        try:
            h = json.loads(raw)
            return f"`dcganlab {h['stage']}` (PID {h['pid']} on host {h['host']}, since {h['since']})"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)  # taken a moment ago: its details are being written
    return "another process (PID unknown)"


@contextmanager
def experiment_lock(root: Path, experiment: str, stage: str) -> Iterator[None]:
    """Hold the experiment's lock while `stage` runs; UserError naming the holder if it is taken."""
    if fcntl is None:
        yield
        return
    path = lock_path(root, experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{experiment} is in use by {_holder(fd)}; wait for it to finish or stop it (lock: {path})"
            ) from None
        me = {
            "stage": stage,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock (the kernel does the same if the process dies)
