"""Hostile and awkward inputs: `dcganlab faces` and fetch + prepare on a folder of them.

Every file is either converted correctly (colour, bit depth, orientation checked on the
produced arrays) or skipped with its reason; stats count every category; nothing crashes;
links out of the folder are not followed; workers=1 and workers=2 give identical arrays.
The folder is built by tests/hostile.py.
"""

import json
import time
from collections import Counter

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_params
from hostile import EXPECTED, GRADIENT16, astronaut, build_hostile
from PIL import Image
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core.config import parse_params
from dcganlab.core.errors import UserError
from dcganlab.data.faces import CropSettings, detect_largest_face
from dcganlab.data.images import load_rgb
from dcganlab.data.prepare import prepare
from dcganlab.data.sources import fetch

DETECT, PLAIN = 0, 1
IGNORED = {k for k, v in EXPECTED.items() if v[0] == "ignored"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return build_hostile(tmp_path_factory.mktemp("hostile"))


def _fetch_prepare(hostile, out_root, detect, workers=1, size=48):
    ds = parse_params(
        tiny_params(
            **{"datasets.digits.source": "folder", "datasets.digits.path": str(hostile), "datasets.digits.limit": 0}
        )
    ).datasets["digits"]
    raw = out_root / "raw"
    if not raw.exists():
        fetch(ds, raw, out_root / "dl")
    out = out_root / f"processed-{detect}-{workers}"
    s = CropSettings(image_size=size, channels=3, detect_faces=detect)
    stats = prepare(raw, out, s, test_fraction=0.0, workers=workers)
    rows = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False).merge(
        pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False)[["file", "source"]], on="file"
    )
    return stats, rows, np.load(out / "images.npy"), out


@pytest.fixture(scope="module")
def plain(hostile, tmp_path_factory):
    """fetch + prepare without face detection, at 48 px: the 64 x 48 test patterns are
    centre-cropped to their middle 48 columns and not resized, so values can be checked exactly."""
    root = tmp_path_factory.mktemp("plain")
    return _fetch_prepare(hostile, root, detect=False)


def _array(prepared, source):
    _, rows, images, _ = prepared
    row = rows[rows["source"] == source].iloc[0]
    assert row["status"] == "kept", (source, row["reason"])
    return images[int(row["index"])].transpose(1, 2, 0).astype(int)  # H x W x 3


def test_every_entry_is_read_or_skipped_with_its_reason(plain, hostile):
    stats, rows, images, out = plain
    readable = {k: v[PLAIN] for k, v in EXPECTED.items() if k not in IGNORED}
    assert dict(zip(rows["source"], rows["status"])) == readable
    assert all(rows.loc[rows["status"] != "kept", "reason"] != "")
    assert stats["discarded"] == dict(Counter(v for v in readable.values() if v != "kept"))
    assert stats["kept"] == len(images) == sum(v == "kept" for v in readable.values())
    ignored = pd.read_csv(out.parent / "raw" / "ignored.csv", keep_default_na=False)
    assert sum(stats["ignored"].values()) == len(IGNORED)
    assert stats["ignored"]["link leading outside the folder (not followed)"] == 1
    assert stats["ignored"]["hidden file"] == 1 and stats["ignored"]["hidden folder (not searched)"] == 1
    assert set(ignored["source"]) == IGNORED


def test_bit_depths_map_to_the_right_8_bit_values(plain):
    expected = np.round(GRADIENT16[:, 8:56] / 257.0).astype(int)  # the centre 48 columns
    gray = _array(plain, "gray16.png")
    assert (gray == expected[:, :, None]).all()
    rgb = _array(plain, "rgb16.png")
    assert (rgb[..., 0] == expected).all() and (rgb[..., 1] == 0).all() and (rgb[..., 2] == 255 - expected).all()
    assert (_array(plain, "rgb16.tif") == rgb).all()
    assert np.abs(_array(plain, "float.tif") - expected[:, :, None]).max() <= 1


def test_alpha_and_palette_are_composited_on_white(plain):
    rgba = _array(plain, "rgba.png")  # columns 8..55 of: transparent red | opaque blue, half-black band below
    assert (rgba[:40, :24] == 255).all()
    assert (rgba[:40, 24:] == (0, 0, 255)).all()
    assert (np.abs(rgba[40:] - 127) <= 1).all()
    pal = _array(plain, "palette.png")  # transparent | green | yellow
    assert (pal[:, :8] == 255).all() and (pal[:, 8:32] == (0, 200, 0)).all() and (pal[:, 32:] == (255, 255, 0)).all()
    gray_alpha = _array(plain, "gray alpha.png")  # black, transparent | opaque
    assert (gray_alpha[:, :24] == 255).all() and (gray_alpha[:, 24:] == 0).all()


def test_cmyk_gray_and_animations_keep_their_colours(plain, hostile):
    cmyk = _array(plain, "cmyk.jpg")  # red ink-free, then blue
    assert np.abs(cmyk[4:20] - (255, 0, 0)).max() <= 12 and np.abs(cmyk[28:44] - (0, 0, 255)).max() <= 12
    for name in ("cmyk.jpg", "cmyk astronaut.jpg"):  # libjpeg's own CMYK conversion, through OpenCV, agrees
        by_opencv = cv2.imread(str(hostile / name))[:, :, ::-1]
        assert np.abs(load_rgb(hostile / name).astype(int) - by_opencv).max() <= 2, name
    reference = _array(plain, "astronaut.jpg")
    assert np.abs(_array(plain, "cmyk astronaut.jpg") - reference).mean() < 4
    gray = _array(plain, "gray.png")
    assert (gray[:24] == 40).all() and (gray[24:] == 220).all()
    bilevel = _array(plain, "bilevel.png")
    assert (bilevel[:24] == 0).all() and (bilevel[24:] == 255).all()
    for name in ("animated.gif", "animated.webp"):  # first frame: red
        assert (np.abs(_array(plain, name) - (255, 0, 0)) <= 2).all(), name
    assert (_array(plain, "UPPER.PNG")[:24] == (255, 0, 0)).all()


def test_exif_orientation_makes_photos_upright(plain, hostile):
    reference = _array(plain, "astronaut.jpg")
    for tag in (3, 6, 8):
        upright = _array(plain, f"exif{tag}.jpg")
        assert np.abs(upright - reference).mean() < 6, tag
        stored = np.asarray(Image.open(hostile / f"exif{tag}.jpg").convert("RGB"))
        assert np.abs(stored.astype(int) - astronaut()).mean() > 30  # the pixels themselves are turned
        assert detect_largest_face(stored, CropSettings()) is None  # so Haar finds the face only upright


def test_bomb_is_refused_from_its_header(hostile):
    assert (hostile / "bomb.png").stat().st_size < 2000
    start = time.perf_counter()
    with pytest.raises(Exception, match="40000x40000 pixels exceeds max_pixels"):
        load_rgb(hostile / "bomb.png")
    assert time.perf_counter() - start < 1.0


def test_with_face_detection_statuses_and_workers_agree(hostile, tmp_path):
    stats, rows, images, out = _fetch_prepare(hostile, tmp_path, detect=True, size=32)
    assert dict(zip(rows["source"], rows["status"])) == {k: v[DETECT] for k, v in EXPECTED.items() if k not in IGNORED}
    assert stats["kept"] == len(images) and images.shape[1:] == (3, 32, 32)
    assert not list(out.parent.glob(".*tmp*"))  # atomic: no temp folder left behind
    _, rows2, images2, _ = _fetch_prepare(hostile, tmp_path, detect=True, workers=2, size=32)
    assert np.array_equal(images, images2) and rows.equals(rows2)


def test_faces_command_on_the_hostile_folder(hostile, tmp_path):
    out = tmp_path / "crops"
    result = CliRunner().invoke(app, ["faces", str(hostile), str(out), "--size", "32"])
    assert result.exit_code == 0, result.output
    m = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert dict(zip(m["file"], m["status"])) == {k: v[DETECT] for k, v in EXPECTED.items()}
    assert m["file"].is_unique and all(m.loc[m["status"] != "kept", "reason"] != "")
    kept = m[m["status"] == "kept"]
    assert kept["crop"].is_unique  # astronaut.jpg/.bmp/.gif/... do not overwrite one another
    for crop in kept["crop"]:
        assert Image.open(out / crop).size == (32, 32)
    crops = dict(zip(kept["file"], kept["crop"]))  # a unique stem keeps its name; shared stems keep the extension
    assert crops["jpeg named.png"] == "jpeg named.png" and crops["link in.jpg"] == "link in.png"
    assert crops["astronaut.jpg"] == "astronaut.jpg.png" and crops["astronaut.bmp"] == "astronaut.bmp.png"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == len(kept) and sum(stats["ignored"].values()) == len(IGNORED)
    assert stats["discarded"] == dict(
        Counter(v[DETECT] for k, v in EXPECTED.items() if v[DETECT] not in ("kept", "ignored"))
    )
    assert not [p for p in out.rglob(".*") if "tmp" in p.name]
    assert not (out / "link out.png").exists()  # the outside file was never read


def test_faces_output_inside_its_input_is_not_read_back(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(astronaut()).save(src / "a.jpg")
    for _ in range(2):
        result = CliRunner().invoke(app, ["faces", str(src), str(src / "crops")])
        assert result.exit_code == 0, result.output
    assert list(pd.read_csv(src / "crops/manifest.csv")["file"]) == ["a.jpg"]


def test_nothing_usable_leaves_no_output(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    (src / "a.png").write_bytes(b"")
    (src / "b.jpg").write_text("text")
    ds = parse_params(tiny_params(**{"datasets.digits.source": "folder", "datasets.digits.path": str(src)})).datasets[
        "digits"
    ]
    fetch(ds, tmp_path / "raw", tmp_path / "dl")
    with pytest.raises(UserError, match=r"none of 2 images could be used \({'empty': 1, 'not_an_image': 1}\)"):
        prepare(tmp_path / "raw", tmp_path / "out", CropSettings(detect_faces=False))
    assert not (tmp_path / "out").exists()


class _DiesWhenUnpickled:
    """Stands in for a decoder that kills its process (a crash in a C library)."""

    def __reduce__(self):
        import os

        return os._exit, (3,)


def test_a_worker_that_dies_is_a_clear_error_not_a_hang(hostile):
    from dcganlab.data.prepare import process_all

    with pytest.raises(UserError, match="a worker process died"):
        process_all([hostile / "astronaut.jpg"] * 4, _DiesWhenUnpickled(), workers=2)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_16_bit_colour_turns_like_pillow(tmp_path, orientation):
    """The OpenCV path for 16-bit colour applies EXIF orientation itself: same as Pillow's."""
    from PIL import ImageOps

    from dcganlab.data.images import _UPRIGHT

    pixels = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "o.png", exif=exif.tobytes())
    img = Image.open(tmp_path / "o.png")
    assert np.array_equal(_UPRIGHT[orientation](pixels), np.asarray(ImageOps.exif_transpose(img)))


def test_16_bit_colour_png_with_exif_orientation(hostile, tmp_path):
    from hostile import _png_chunk

    data = (hostile / "rgb16.png").read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    end_of_ihdr = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    turned = data[:end_of_ihdr] + _png_chunk(b"eXIf", exif.tobytes()) + data[end_of_ihdr:]
    (tmp_path / "turned.png").write_bytes(turned)
    assert np.array_equal(load_rgb(tmp_path / "turned.png"), np.rot90(load_rgb(hostile / "rgb16.png"), -1))


@pytest.mark.parametrize("option", [["--margin", "-1"], ["--min-face-size", "0"], ["--size", "4"]])
def test_faces_command_rejects_bad_options_in_one_line(hostile, tmp_path, option):
    result = CliRunner().invoke(app, ["faces", str(hostile), str(tmp_path / "out"), *option])
    assert result.exit_code == 1 and result.output.startswith("error: --") and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out", [".", ".."])
def test_faces_refuses_to_write_over_its_input(tmp_path, out):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(astronaut()).save(src / "a.png")
    before = (src / "a.png").read_bytes()
    result = CliRunner().invoke(app, ["faces", str(src), str(src / out)])
    assert result.exit_code == 1 and "contains, the input folder" in result.output
    assert (src / "a.png").read_bytes() == before


def test_a_file_that_cannot_be_copied_is_ignored_with_its_reason(tmp_path, monkeypatch):
    """No read permission, or gone since the scan (root ignores chmod, so the copy is made to fail)."""
    import shutil

    from dcganlab.data import sources

    src = tmp_path / "photos"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (20, 20), "red").save(src / name)
    real_copy = shutil.copyfile

    def copy(a, b):
        if a.name == "b.png":
            raise PermissionError(13, "Permission denied")
        return real_copy(a, b)

    monkeypatch.setattr(sources.shutil, "copyfile", copy)
    ds = parse_params(tiny_params(**{"datasets.digits.source": "folder", "datasets.digits.path": str(src)})).datasets[
        "digits"
    ]
    manifest = fetch(ds, tmp_path / "raw", tmp_path / "dl")
    assert list(manifest["source"]) == ["a.png", "c.png"] and list(manifest["file"]) == [
        "images/000000.png",
        "images/000001.png",
    ]
    ignored = pd.read_csv(tmp_path / "raw/ignored.csv")
    assert ignored.values.tolist() == [["b.png", "cannot be read (PermissionError)"]]
