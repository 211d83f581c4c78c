"""Atomic outputs: every file is written to a temp name beside it, then renamed.

A reader (or a crashed run) never sees a half-written file where a complete one is
expected. Directories are built under a temp name and swapped in whole. A write that fails
(a full disk: ENOSPC) is a UserError naming the file it was writing; the previous one stays.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dcganlab.files import WRITE_ERRNOS, cannot_write


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` (same suffix); rename it over `path` on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:  # a full disk, a read-only folder: say which output failed
            raise cannot_write(path, exc) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def save_png(path: str | Path, image) -> None:
    """`image`: a PIL image."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_torch(path: str | Path, obj: Any) -> None:
    import torch

    # through a file object: given a path, torch.save names the zip's folder after the (temp)
    # file, so equal weights would give different bytes and DVC hashes on every run
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def write_csv(path: str | Path, frame) -> None:
    """`frame`: a pandas DataFrame."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temp name; swap it in place of `path` on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield tmp
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:  # a full disk, a read-only folder: say which output failed
            raise cannot_write(path, exc) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
