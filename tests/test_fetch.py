"""fetch: each source lands in data/raw/<dataset>/ as images/ + manifest.csv."""

import gzip
import hashlib
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_params, write_params
from PIL import Image
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core.config import parse_params
from dcganlab.core.errors import UserError
from dcganlab.data.sources import fetch


def _dataset(**overrides):
    raw = tiny_params(**{f"datasets.digits.{k}": v for k, v in overrides.items()})
    return parse_params(raw).datasets["digits"]


def _check_manifest(out, n):
    m = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(m.columns) == ["file", "label", "source", "checksum"]
    assert len(m) == n
    for row in m.head(3).itertuples():
        assert hashlib.sha256((out / row.file).read_bytes()).hexdigest() == row.checksum
    return m


def test_mnist_subset_is_real_labeled_digits(tmp_path):
    out = tmp_path / "raw"
    fetch(_dataset(limit=50), out, tmp_path / "dl")
    m = _check_manifest(out, 50)
    assert set(m["label"]) <= set("0123456789")
    img = np.asarray(Image.open(out / m["file"][0]))
    assert img.shape == (28, 28) and img.max() > 200  # real ink, not blank


def test_lfw_subset_has_faces_and_nonfaces(tmp_path):
    out = tmp_path / "raw"
    fetch(_dataset(source="lfw-subset", limit=0), out, tmp_path / "dl")
    m = _check_manifest(out, 200)
    assert (m["label"] == "face").sum() == 100 and (m["label"] == "nonface").sum() == 100
    assert Image.open(out / m["file"][0]).size == (200, 200)


def test_folder_source_is_recursive_and_skips_hidden_and_outside_links(tmp_path):
    src = tmp_path / "photos"
    (src / "nested" / "deeper").mkdir(parents=True)
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8), "red").save(outside)
    Image.new("RGB", (8, 8), "blue").save(src / "a.PNG")
    Image.new("RGB", (8, 8), "green").save(src / "nested" / "deeper" / "b.jpg")
    Image.new("RGB", (8, 8), "white").save(src / ".hidden.png")
    (src / "notes.txt").write_text("not an image")
    (src / "link.png").symlink_to(outside)
    out = tmp_path / "raw"
    fetch(_dataset(source="folder", path=str(src)), out, tmp_path / "dl")
    m = _check_manifest(out, 2)
    assert sorted(m["source"]) == ["a.PNG", "nested/deeper/b.jpg"]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "folder not found"),
        (lambda p: p.mkdir(), "no image files"),
    ],
)
def test_folder_source_bad_folder_is_a_clear_error(tmp_path, make, message):
    src = tmp_path / "photos"
    make(src)
    with pytest.raises(UserError, match=message):
        fetch(_dataset(source="folder", path=str(src)), tmp_path / "raw", tmp_path / "dl")
    assert not (tmp_path / "raw").exists()  # nothing half-written


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("source", ["mnist", "fashion-mnist"])
def test_mnist_formats_are_read_from_idx_files(tmp_path, source):
    raw_dir = tmp_path / "dl" / source / source.upper() / "raw"
    raw_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (7, 28, 28)), np.arange(7) % 10
    _write_idx(raw_dir / "train-images-idx3-ubyte.gz", images)
    _write_idx(raw_dir / "train-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "raw"
    fetch(_dataset(source=source, limit=0), out, tmp_path / "dl")
    m = _check_manifest(out, 7)
    assert list(m["label"]) == [str(v) for v in labels]
    assert np.array_equal(np.asarray(Image.open(out / m["file"][3])), images[3])


def _idx_folder(folder, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    _write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def _no_download(monkeypatch):
    import dcganlab.data.sources as sources

    def refuse(*args, **kwargs):
        raise AssertionError("downloaded although datasets.<name>.path is set")

    monkeypatch.setattr(sources, "_download", refuse)


def test_path_reads_the_users_official_files_checks_them_and_never_downloads(tmp_path, monkeypatch):
    import dcganlab.data.sources as sources

    _no_download(monkeypatch)
    folder = _idx_folder(tmp_path / "mine")
    official = {
        name: sources.content_md5(folder / f"{name}.gz")
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    }
    monkeypatch.setitem(sources.OFFICIAL_MD5, "fashion-mnist", official)  # these files play the official ones
    out = tmp_path / "raw"
    fetch(_dataset(source="fashion-mnist", path=str(folder)), out, tmp_path / "dl")
    _check_manifest(out, 5)
    assert not (tmp_path / "dl").exists()
    # the same content uncompressed (a repackaged copy) passes the same check
    (folder / "train-images-idx3-ubyte").write_bytes(
        gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    )
    (folder / "train-images-idx3-ubyte.gz").unlink()
    fetch(_dataset(source="fashion-mnist", path=str(folder)), tmp_path / "raw2", tmp_path / "dl")
    _check_manifest(tmp_path / "raw2", 5)


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "other",
            r"^.*train-images-idx3-ubyte.gz: not the official fashion-mnist file \(content md5 [0-9a-f]{32}, "
            r"official f4a8712d7a061bf5bd6d2ca38dc4d50a\)$",
        ),
        ("empty", r"^fashion-mnist \(train\): the official files are not under .*empty \(nothing is downloaded"),
        ("missing", r"^folder not found: .*missing$"),
    ],
)
def test_path_with_wrong_or_no_files_is_one_line_and_downloads_nothing(tmp_path, monkeypatch, case, message):
    _no_download(monkeypatch)
    folder = {
        "other": lambda: _idx_folder(tmp_path / "other"),
        "missing": lambda: tmp_path / "missing",
        "empty": lambda: (tmp_path / "empty").mkdir() or tmp_path / "empty",
    }[case]()
    write_params(
        tmp_path, tiny_params(**{"datasets.digits.source": "fashion-mnist", "datasets.digits.path": str(folder)})
    )
    result = CliRunner().invoke(app, ["fetch", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert re.match(message, result.output.removeprefix("error: ").strip()), result.output


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed here")
def test_debians_fashion_mnist_package_is_the_official_content():
    from dcganlab.data.sources import OFFICIAL_MD5, content_md5, verify_official

    verify_official("fashion-mnist", DEBIAN)  # its .gz files differ from the official .gz bytes, not in content
    assert {p.name.removesuffix(".gz") for p in DEBIAN.glob("*-ubyte.gz")} == set(OFFICIAL_MD5["fashion-mnist"])
    assert content_md5(DEBIAN / "t10k-labels-idx1-ubyte.gz") == OFFICIAL_MD5["fashion-mnist"]["t10k-labels-idx1-ubyte"]


def test_cifar10_is_read_from_pickle_batches(tmp_path):
    folder = tmp_path / "dl" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = None
    for i in range(1, 6):
        data = rng.integers(0, 256, (2, 3072)).astype(np.uint8)
        first = data if first is None else first
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"data": data, "labels": [i % 10, (i + 1) % 10]}, fh)
    out = tmp_path / "raw"
    fetch(_dataset(source="cifar10", limit=0), out, tmp_path / "dl")
    m = _check_manifest(out, 10)
    img = np.asarray(Image.open(out / m["file"][0]))
    assert img.shape == (32, 32, 3)
    assert np.array_equal(img, first[0].reshape(3, 32, 32).transpose(1, 2, 0))


def test_stl10_is_read_from_binaries(tmp_path):
    folder = tmp_path / "dl" / "stl10" / "stl10_binary"
    folder.mkdir(parents=True)
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 96, 96)).astype(np.uint8)
    x.tofile(folder / "train_X.bin")
    np.array([1, 2, 10], np.uint8).tofile(folder / "train_y.bin")
    out = tmp_path / "raw"
    fetch(_dataset(source="stl10", limit=0), out, tmp_path / "dl")
    m = _check_manifest(out, 3)
    assert list(m["label"]) == ["0", "1", "9"]
    assert np.array_equal(np.asarray(Image.open(out / m["file"][1])), x[1].transpose(2, 1, 0))


def test_celeba_is_read_from_its_jpeg_folder(tmp_path):
    folder = tmp_path / "dl" / "celeba" / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (178, 218), (i * 50, 0, 0)).save(folder / f"{i + 1:06d}.jpg")
    out = tmp_path / "raw"
    fetch(_dataset(source="celeba", limit=2), out, tmp_path / "dl")
    _check_manifest(out, 2)


def test_failed_download_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tvu, "download_url", offline)
    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    import torchvision.datasets.mnist as tvm

    monkeypatch.setattr(tvm, "download_and_extract_archive", offline)
    write_params(tmp_path, tiny_params(**{"datasets.digits.source": "mnist"}))
    result = CliRunner().invoke(app, ["fetch", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 1
    assert result.output.startswith("error: could not download mnist") and result.output.count("\n") == 1


def test_fetch_command_writes_raw_data(project):
    result = CliRunner().invoke(app, ["fetch", "digits", "--params", str(project)])
    assert result.exit_code == 0, result.output
    assert (project.parent / "data/raw/digits/manifest.csv").is_file()
    result = CliRunner().invoke(app, ["fetch", "nope", "--params", str(project)])
    assert result.exit_code == 1 and "unknown dataset 'nope'" in result.output
