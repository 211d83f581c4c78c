"""Atomic outputs: every file is written to a temp name beside it, then renamed.

A reader (or a crashed run) never sees a half-written file where a complete one is
expected. Directories are built under a temp name and swapped in whole. A write that fails
(a full disk: ENOSPC) is a UserError naming the file it was writing; the previous one stays.
A killed process leaves its temp entries behind (gigabytes for a dataset): the next write of
the same path removes those whose process is gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dcganlab.core.files import WRITE_ERRNOS, cannot_write

_temp_names: dict[Path, list[str]] = {}  # folder -> its temp-looking entries, listed once per process


def _alive(pid: int) -> bool:
    """Whether process `pid` may exist (a reused pid counts: its temp entry waits for a later run)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no pid reaches
        return False
    except PermissionError:  # another user's process
        return True
    return True


def writer_gone(temp_name: str) -> bool:
    """Whether the process that named a temp entry `.{name}.tmp{pid}...` has ended."""
    match = re.match(r".*\.(?:tmp|old)([0-9]+)", temp_name)  # the last such part: a stem may hold ".tmp5"
    return bool(match) and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1)))


def _remove_dead(folder: Path, names: list[str], pattern: re.Pattern) -> None:
    """Remove the entries of `folder` named by `pattern` whose writer is gone. Never one of a
    live process: it may be writing it right now."""
    for name in names:
        if not pattern.fullmatch(name) or not writer_gone(name):
            continue
        stale = folder / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def remove_file_leftovers(path: Path) -> None:
    """`atomic_path`'s temp files for `path` (`.{stem}.tmp{pid}{suffix}`) that a killed process
    left. Its folder is listed once per process: prepare writes thousands of files into one."""
    if path.parent not in _temp_names:
        _temp_names[path.parent] = [n for n in os.listdir(path.parent) if ".tmp" in n]
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.tmp([0-9]+){re.escape(path.suffix)}")
    _remove_dead(path.parent, _temp_names[path.parent], pattern)


def remove_dir_leftovers(path: Path) -> None:
    """`atomic_dir`'s temp and set-aside folders for `path` (`.{name}.tmp{pid}`, `.{name}.old{pid}`)
    that a killed process left: a whole dataset each."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:tmp|old)([0-9]+)")
    _remove_dead(path.parent, os.listdir(path.parent), pattern)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` (same suffix); rename it over `path` on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_file_leftovers(path)
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
        remove_dir_leftovers(path)
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
