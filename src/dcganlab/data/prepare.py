"""prepare: raw images -> one pre-decoded uint8 array that training reads directly.

`data/processed/<dataset>/`:
  images.npy   N x C x H x W uint8
  labels.npy   N int64 (class index, -1 when unlabeled)
  split.npy    N uint8 (0 = train, 1 = held-out test: the evaluation reference split)
  manifest.csv one row per raw file: file, label, status, reason, index, split
  stats.json   images in, kept, discarded by status, ignored by reason (folder source:
               entries fetch did not read), kept by label, classes, sizes

`faces` is the same per-image work as a standalone tool on any folder of photos.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from dcganlab.core.atomic import atomic_dir, save_png, write_csv, write_json
from dcganlab.core.errors import UserError
from dcganlab.core.files import Unreadable, dvc_output, read_csv
from dcganlab.core.paths import inside
from dcganlab.core.progress import progress
from dcganlab.data.faces import CropSettings, process_image
from dcganlab.data.sources import IGNORED_CSV, scan_folder, shown


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _work(args: tuple[Path, CropSettings]):
    return process_image(*args)


def process_all(files: list[Path], s: CropSettings, workers: int = 1, desc: str = "prepare"):
    """process_image over `files`, in input order, on `workers` processes (spawned: a forked
    child can deadlock on locks held by OpenCV's or torch's threads in the parent)."""
    jobs = [(f, s) for f in files]
    bar = dict(total=len(jobs), noun="image", unit="img", leave=True)
    if workers <= 1:
        return [_work(j) for j in progress(jobs, desc, **bar)]
    # an executor, not a Pool: if a decoder kills its process, Pool.imap waits forever
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker) as pool:
        try:
            return list(progress(pool.map(_work, jobs, chunksize=16), desc, **bar))
        except BrokenProcessPool:
            raise UserError(
                f"{desc}: a worker process died while decoding an image; rerun with workers=1 to see which file"
            ) from None


def _class_order(labels: list[str]) -> list[str]:
    names = sorted({lab for lab in labels if lab})
    return sorted(names, key=int) if all(n.lstrip("-").isdigit() for n in names) else names


def _raw_files(raw: Path, manifest: pd.DataFrame) -> list[Path]:
    """The manifest's files, each checked to lie inside `raw/`: a row like ../../etc/passwd or
    /etc/passwd means the manifest was edited by hand or tampered with, so nothing is read."""
    files, bad = [], []
    for row, rel in enumerate(manifest["file"], start=2):  # line 1 is the header
        try:
            files.append(inside(raw, str(rel)))
        except ValueError as why:
            bad.append(f"line {row} '{rel}' ({why})")
    if bad:
        raise UserError(
            f"{raw / 'manifest.csv'}: {len(bad)} file path(s) outside {raw}, refusing to read: "
            f"{'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
        )
    return files


def prepare(raw: Path, out: Path, s: CropSettings, test_fraction: float = 0.1, seed: int = 0, workers: int = 1) -> dict:
    """Process `raw/` (fetch's output) into `out/`; return the stats."""
    manifest_path = raw / "manifest.csv"
    if not manifest_path.is_file():
        raise UserError(f"no raw data at {raw} (run `dcganlab fetch` first)")
    remedy = dvc_output(raw, f"fetch@{raw.name}")
    manifest = read_csv(manifest_path, "fetch manifest", remedy, dtype={"label": str}, keep_default_na=False)
    if not {"file", "label"} <= set(manifest.columns):
        raise Unreadable(manifest_path, "fetch manifest", "no file and label columns", remedy)
    if manifest.empty:
        raise UserError(f"{manifest_path} lists no images")
    results = process_all(_raw_files(raw, manifest), s, workers, desc=f"prepare {raw.name}")

    kept = [i for i, (arr, _, _) in enumerate(results) if arr is not None]
    statuses = Counter(status for _, status, _ in results)
    if not kept:
        what = "no face found in any" if s.detect_faces else "none"
        raise UserError(f"{raw.name}: {what} of {len(results)} images could be used ({dict(statuses)})")

    labels_str = [manifest["label"].iloc[i] for i in kept]
    classes = _class_order(labels_str)
    lookup = {c: k for k, c in enumerate(classes)}
    images = np.stack([results[i][0] for i in kept])
    labels = np.array([lookup.get(lab, -1) for lab in labels_str], np.int64)
    split = np.zeros(len(kept), np.uint8)
    n_test = int(round(len(kept) * test_fraction))
    if n_test:
        split[np.random.default_rng(seed).permutation(len(kept))[:n_test]] = 1

    index = np.full(len(results), -1)
    index[kept] = np.arange(len(kept))
    rows = manifest[["file", "label"]].copy()
    rows["status"] = [r[1] for r in results]
    rows["reason"] = [r[2] for r in results]
    rows["index"] = index
    rows["split"] = [("test" if split[j] else "train") if j >= 0 else "" for j in index]

    ignored = (
        read_csv(raw / IGNORED_CSV, "fetch's ignored list", remedy, dtype=str, keep_default_na=False)
        if (raw / IGNORED_CSV).is_file()
        else None
    )
    stats = {
        "images_in": len(results),
        # folder source: entries fetch did not read (hidden, links out of the folder, ...), by reason
        "ignored": {} if ignored is None else dict(sorted(Counter(ignored["reason"]).items())),
        "kept": len(kept),
        "discarded": {k: v for k, v in sorted(statuses.items()) if k != "kept"},
        "kept_by_label": dict(sorted(Counter(labels_str).items())),
        "classes": classes,
        "image_size": s.image_size,
        "channels": s.channels,
        "detect_faces": s.detect_faces,
        "train": int((split == 0).sum()),
        "test": int((split == 1).sum()),
    }
    with atomic_dir(out) as tmp:
        for name, arr in (("images", images), ("labels", labels), ("split", split)):
            np.save(tmp / f"{name}.npy", arr)
        rows.to_csv(tmp / "manifest.csv", index=False)
        write_json(tmp / "stats.json", stats)
    return stats


def crop_names(rels: list[Path]) -> list[Path]:
    """OUT-relative PNG name of each input: the same path with .png, unless two inputs would
    share it (a.jpg and a.png): then the input's full name + .png (a.jpg.png)."""
    plain = [rel.with_suffix(".png") for rel in rels]
    taken = Counter(plain)
    return [
        p if taken[p] == 1 or rel.suffix == ".png" else rel.with_name(rel.name + ".png") for rel, p in zip(rels, plain)
    ]


def prepare_folder(src: Path, out: Path, s: CropSettings, workers: int = 1) -> pd.DataFrame:
    """`dcganlab faces`: crop every photo under `src` into `out/` (PNG), with out/manifest.csv
    (one row per entry of `src`, ignored ones included) and out/stats.json (counts by status)."""
    if not src.is_dir():
        raise UserError(f"folder not found: {src}" if not src.exists() else f"not a folder: {src}")
    if src.resolve().is_relative_to(out.resolve()):  # OUT inside SRC is fine: it is not read back
        raise UserError(f"the output folder {out} is, or contains, the input folder: crops could overwrite photos")
    files, ignored = scan_folder(src, exclude=out)
    if not files:
        raise UserError(f"no image files in {src}")
    results = process_all(files, s, workers, desc="faces")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    root = src.resolve()
    rels = [Path(shown(path.relative_to(root).as_posix())) for path in files]
    for rel, name, (arr, status, reason) in zip(rels, crop_names(rels), results):
        crop = ""
        if arr is not None:
            crop = name.as_posix()
            img = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
            save_png(out / crop, Image.fromarray(img))
        rows.append({"file": rel.as_posix(), "status": status, "reason": reason, "crop": crop})
    rows += [{"file": rel, "status": "ignored", "reason": why, "crop": ""} for rel, why in ignored]
    manifest = pd.DataFrame(rows, columns=["file", "status", "reason", "crop"])
    write_csv(out / "manifest.csv", manifest)
    write_json(
        out / "stats.json",
        {
            "images_in": len(files),
            "kept": int((manifest["status"] == "kept").sum()),
            "discarded": {k: v for k, v in sorted(Counter(r[1] for r in results).items()) if k != "kept"},
            "ignored": dict(sorted(Counter(why for _, why in ignored).items())),
            "image_size": s.image_size,
            "channels": s.channels,
            "detect_faces": s.detect_faces,
        },
    )
    if not (manifest["status"] == "kept").any():
        raise UserError(f"no face found in any of {len(files)} images in {src} (see {out / 'manifest.csv'})")
    return manifest
