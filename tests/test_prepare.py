"""prepare and faces: real Haar detection on real faces, arrays training can read directly."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core.errors import UserError
from dcganlab.data.faces import CropSettings, process_image, square_box
from dcganlab.data.prepare import prepare, prepare_folder


def test_haar_finds_real_faces_and_rejects_nonfaces(tmp_path):
    """All 200 LFW-subset images: recall on the 100 faces, false positives on the 100 others."""
    from dcganlab.core.config import DatasetParams
    from dcganlab.data.sources import fetch

    raw = tmp_path / "raw"
    fetch(DatasetParams(source="lfw-subset"), raw, tmp_path / "dl")
    stats = prepare(raw, tmp_path / "out", CropSettings(image_size=32, channels=3), test_fraction=0.1)
    manifest = pd.read_csv(tmp_path / "out/manifest.csv", dtype={"label": str}, keep_default_na=False)
    kept = manifest[manifest["status"] == "kept"]
    assert (kept["label"] == "face").sum() >= 95  # recall >= 0.95 (98 seen)
    assert (kept["label"] == "nonface").sum() <= 2  # false positives <= 2 % (0 seen)
    assert stats["discarded"] == {"no_face": 200 - stats["kept"]}
    images = np.load(tmp_path / "out/images.npy")
    assert images.shape == (stats["kept"], 3, 32, 32) and images.dtype == np.uint8


def test_astronaut_face_is_found_and_cropped(face_photos):
    arr, status, reason = process_image(face_photos / "astronaut.jpg", CropSettings(image_size=64, channels=3))
    assert status == "kept" and arr.shape == (3, 64, 64)
    assert reason.startswith("face ")


def test_square_box_keeps_inside_the_image():
    assert square_box((10, 10, 20, 20), 100, 100, 0.5) == (5, 5, 30)
    left, top, side = square_box((0, 0, 50, 40), 60, 45, 1.0)
    assert side == 45 and left >= 0 and top == 0 and left + side <= 60


def test_exif_rotation_is_honoured(tmp_path):
    img = Image.new("RGB", (40, 20), "black")
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    arr, status, _ = process_image(tmp_path / "rot.jpg", CropSettings(image_size=20, channels=1, detect_faces=False))
    assert status == "kept"
    # displayed upright the image is 20 wide x 40 tall, white on top
    from dcganlab.data.images import load_rgb

    upright = load_rgb(tmp_path / "rot.jpg")
    assert upright.shape[:2] == (40, 20)
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50


def test_prepare_digits_writes_arrays_labels_split_and_stats(prepared):
    folder = prepared.root / "data/processed/digits"
    images, labels, split = (np.load(folder / f"{n}.npy") for n in ("images", "labels", "split"))
    assert images.shape == (120, 1, 16, 16) and images.dtype == np.uint8
    assert labels.min() >= 0 and labels.max() <= 9
    assert split.sum() == 24  # test_fraction 0.2
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["kept"] == 120 and stats["classes"] == [str(i) for i in range(10)]
    manifest = pd.read_csv(folder / "manifest.csv")
    assert list(manifest.columns) == ["file", "label", "status", "reason", "index", "split"]


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    Image.new("L", (28, 28), 255).save(raw / "images/0.png")
    (raw / "images/1.png").write_bytes(b"")
    (raw / "images/2.png").write_text("this is text")
    pd.DataFrame(
        {
            "file": [f"images/{i}.png" for i in range(3)],
            "label": ["", "", ""],
            "source": ["t"] * 3,
            "checksum": [""] * 3,
        }
    ).to_csv(raw / "manifest.csv", index=False)
    stats = prepare(raw, tmp_path / "out", CropSettings(image_size=16, channels=1, detect_faces=False))
    assert stats["kept"] == 1 and stats["discarded"] == {"empty": 1, "not_an_image": 1}


def test_folder_without_faces_is_a_clear_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (120, 120), (i * 60, 90, 30)).save(src / f"{i}.png")
    with pytest.raises(UserError, match="no face found in any of 3 images"):
        prepare_folder(src, tmp_path / "out", CropSettings(image_size=32))
    manifest = pd.read_csv(tmp_path / "out/manifest.csv")
    assert list(manifest["status"]) == ["no_face"] * 3


def test_faces_command_crops_real_faces(face_photos, tmp_path):
    out = tmp_path / "crops"
    result = CliRunner().invoke(app, ["faces", str(face_photos), str(out), "--size", "48"])
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 10 and list(manifest.columns)[:3] == ["file", "status", "reason"]
    status = dict(zip(manifest["file"], manifest["status"]))
    assert status["astronaut.jpg"] == "kept"
    assert sum(status[f"face_{i}.png"] == "kept" for i in range(6)) >= 5
    assert all(status[f"nonface_{i}.png"] == "no_face" for i in (150, 160, 170))
    assert Image.open(out / "astronaut.png").size == (48, 48)


def test_faces_command_on_missing_folder_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["faces", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output == f"error: folder not found: {tmp_path / 'nope'}\n"


def test_prepare_workers_give_the_same_result(tmp_path, face_photos):
    files = sorted(p for p in face_photos.iterdir())
    from dcganlab.data.prepare import process_all

    one = process_all(files, CropSettings(image_size=32), workers=1)
    two = process_all(files, CropSettings(image_size=32), workers=2)
    assert [r[1] for r in one] == [r[1] for r in two]
    assert all((a[0] is None and b[0] is None) or np.array_equal(a[0], b[0]) for a, b in zip(one, two))
