"""Reading back what the pipeline wrote: a damaged file is one line that names it and says what to do.

Every file a stage reads back (checkpoints, models, arrays, JSON, CSV, images, mlflow.db) goes
through these loaders, so a truncated, empty or garbled file ends as a UserError
`<path>: unreadable <what> (<short reason>); <remedy>`, never as a library's exception. The
reason is always ours, never the library's text: torch and NumPy answer a file they refuse with
advice to retry with `weights_only=False` / `allow_pickle=True`, which would let a tampered file
run code. The remedy depends on who owns the file (`dvc_output`, `CHECKPOINT`, `MLFLOW_DB`).

Writes fail here too: `cannot_write` turns an OSError of an atomic write (a full disk, a
read-only folder) into a line naming the file; atomic.py keeps the previous file in place.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from dcganlab.core.errors import UserError

CHECKPOINT = "delete it to retrain from scratch, or restore it from a backup"
MLFLOW_DB = "remove it to start a new, empty store (its runs are lost), or restore it from a backup"
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def restore(output: str | Path) -> str:
    """--force: without it DVC refuses to replace a file whose content is not in its cache (a
    damaged one), "Can't remove the following unsaved files without confirmation"."""
    return f"restore it with `dvc checkout --force {shown(output)}`"


def dvc_output(output: str | Path, stage: str) -> str:
    """The remedy for a file in DVC output `output`, written by `stage` (e.g. "prepare@digits")."""
    return f"{restore(output)} or rerun `dvc repro {stage}`"


def shown(path: str | Path) -> str:
    """`path` relative to the working directory when it lies inside it (what the user types), else as given."""
    rel = os.path.relpath(Path(path).absolute())
    return str(path) if rel.startswith("..") else rel


class Unreadable(UserError):
    """A file that could not be read or parsed; its parts stay apart for callers that carry on
    without it (inception.py reports it in the metrics instead)."""

    def __init__(self, path: str | Path, what: str, reason: str, remedy: str):
        super().__init__(f"{shown(path)}: unreadable {what} ({reason}); {remedy}")
        self.path, self.what, self.reason, self.remedy = Path(path), what, reason, remedy


def _reason(path: Path, exc: BaseException, garbled: str) -> str:
    """A short reason in our own words; `garbled` when the content itself is wrong (torch even
    reports a truncated archive as an OSError, EINVAL: so open the file again to tell)."""
    try:
        with open(path, "rb") as fh:
            if not fh.read(1):
                return "empty file"
    except OSError as why:  # missing, no permission, a folder, an I/O error
        return why.strerror or type(why).__name__
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):  # its own message is safe and says where
        return f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    return garbled


def load_torch(path: str | Path, what: str, remedy: str, keys: tuple[str, ...] = (), map_location="cpu") -> dict:
    """A tensor-only torch file (nothing unpickled) holding `keys`."""
    import torch

    path = Path(path)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - RuntimeError (zip), EOFError, UnpicklingError, OSError...
        reason = _reason(path, exc, "truncated, or not a tensor-only PyTorch file")
        raise Unreadable(path, what, reason, remedy) from None
    missing = [k for k in keys if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise Unreadable(path, what, f"no '{missing[0]}' in it", remedy)
    return blob


def load_npy(path: str | Path, what: str, remedy: str):
    """A NumPy array (never pickled objects)."""
    import numpy as np

    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - ValueError (truncated, pickled), EOFError, OSError...
        raise Unreadable(path, what, _reason(path, exc, "truncated, or not a NumPy array"), remedy) from None


def read_json(path: str | Path, what: str, remedy: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001
        raise Unreadable(path, what, _reason(path, exc, "not JSON"), remedy) from None


def read_csv(path: str | Path, what: str, remedy: str, **options):
    """A pandas DataFrame; `options` go to pd.read_csv."""
    import pandas as pd

    path = Path(path)
    try:
        return pd.read_csv(path, **options)
    except Exception as exc:  # noqa: BLE001 - ParserError, EmptyDataError, UnicodeDecodeError, OSError...
        raise Unreadable(path, what, _reason(path, exc, "not valid CSV"), remedy) from None


def load_image(path: str | Path, what: str, remedy: str):
    """A decoded RGB PIL image (decoded here, so a damaged file fails here and not later)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - a damaged file can make a decoder raise anything
        raise Unreadable(path, what, _reason(path, exc, "truncated, or not an image"), remedy) from None


def check_sqlite(path: str | Path, what: str, remedy: str) -> None:
    """Refuse an existing `path` that is not a whole SQLite database, from its 100-byte header
    (no scan of the file). SQLite takes a zero-byte file for a new, empty database: MLflow would
    then silently start over with no runs; a cut one fails later, mid-run, as "malformed"."""
    path = Path(path)
    if not path.exists():
        return  # a new store: MLflow creates it
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise Unreadable(path, what, _reason(path, exc, ""), remedy) from None
    if not head.startswith(SQLITE_HEADER) or len(head) < 100:
        raise Unreadable(path, what, "empty file" if not head else "not an SQLite database", remedy)
    if _sqlite_size(head) > path.stat().st_size:
        raise Unreadable(path, what, "truncated: shorter than its header says", remedy)


def _sqlite_size(head: bytes) -> int:
    """The file size an SQLite header declares (page size x page count; see sqlite.org/fileformat.html),
    or 0 where the count is not valid (written by SQLite before 3.7.0: the two counters differ)."""
    page = int.from_bytes(head[16:18], "big")
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]
    return (65536 if page == 1 else page) * pages if valid else 0


# what a write can hit that the user fixes outside the pipeline (not e.g. a network error
# raised while a download streams into an atomic file)
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
WRITE_ERRNOS = NO_SPACE | NOT_WRITABLE | {errno.EIO}


def cannot_write(path: str | Path, exc: OSError) -> UserError:
    """An atomic write that failed (nothing was replaced): what to do depends on why."""
    if exc.errno in NO_SPACE:
        todo = "free disk space and rerun"
    elif exc.errno in NOT_WRITABLE:
        todo = "make its folder writable and rerun"
    else:
        todo = "check the disk and rerun"
    reason = exc.strerror or type(exc).__name__
    return UserError(f"{shown(path)}: could not write ({reason}); {todo} (the previous output, if any, is unchanged)")
