"""Paths from manifests and params cannot leave the project's data directory.

The one path a user may point anywhere is the folder source's input (`datasets.<name>.path`):
it is read, never written, and fetch copies what it reads into data/raw/<name>/.
"""

import os

import pandas as pd
import pytest
from conftest import tiny_params, write_params
from PIL import Image
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core import paths
from dcganlab.core.errors import UserError
from dcganlab.data.faces import CropSettings
from dcganlab.data.prepare import prepare


def _raw(tmp_path, files):
    raw = tmp_path / "data/raw/digits"
    (raw / "images").mkdir(parents=True)
    Image.new("L", (16, 16), 200).save(raw / "images/000000.png")
    pd.DataFrame(
        {"file": files, "label": [""] * len(files), "source": ["t"] * len(files), "checksum": [""] * len(files)}
    ).to_csv(raw / "manifest.csv", index=False)
    return raw


@pytest.mark.parametrize("rel", ["images/000000.png", "images/./000000.png", "images/sub dir/ü.png"])
def test_plain_relative_paths_are_inside(tmp_path, rel):
    assert paths.inside(tmp_path, rel) == tmp_path / rel


@pytest.mark.parametrize(
    "rel,why",
    [
        ("../../etc/passwd", "'..' leaves the folder"),
        ("images/../../x.png", "'..' leaves the folder"),
        ("/etc/passwd", "absolute path"),
        ("C:\\Windows\\win.ini", "absolute path"),
        ("", "empty path"),
    ],
)
def test_escaping_paths_are_refused(tmp_path, rel, why):
    with pytest.raises(ValueError, match=why):
        paths.inside(tmp_path, rel)


def test_prepare_refuses_a_manifest_row_outside_raw(tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("L", (16, 16), 0).save(secret)
    raw = _raw(tmp_path, ["images/000000.png", "../../../secret.png", str(secret)])
    with pytest.raises(
        UserError,
        match=r"2 file path\(s\) outside .*line 3 '../../../secret.png' \('..' leaves the "
        r"folder\); line 4 '.*secret.png' \(absolute path\)",
    ):
        prepare(raw, tmp_path / "out", CropSettings(image_size=16, channels=1, detect_faces=False))
    assert not (tmp_path / "out").exists()  # nothing was read or written


def test_prepare_follows_links_in_raw_as_dvc_symlink_caches_make_them(tmp_path):
    raw = _raw(tmp_path, ["images/000000.png", "images/000001.png"])
    cache = tmp_path / ".dvc/cache/files/md5/ab"
    cache.mkdir(parents=True)
    Image.new("L", (16, 16), 0).save(cache / "cdef", format="PNG")
    os.symlink(cache / "cdef", raw / "images/000001.png")
    stats = prepare(raw, tmp_path / "out", CropSettings(image_size=16, channels=1, detect_faces=False))
    assert stats["kept"] == 2


def test_prepare_command_reports_a_tampered_manifest_in_one_line(tmp_path):
    write_params(tmp_path, tiny_params())
    _raw(tmp_path, ["images/000000.png", "../../../../etc/passwd"])
    result = CliRunner().invoke(app, ["prepare", "digits", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "outside" in result.output and "etc/passwd" in result.output


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", "x\\y"])
def test_stage_paths_refuse_names_that_leave_their_folder(tmp_path, name):
    for where in (
        paths.raw_dir,
        paths.processed_dir,
        paths.model_dir,
        paths.report_dir,
        paths.eval_path,
        paths.extractor_path,
    ):
        with pytest.raises(ValueError, match="not a plain name"):
            where(tmp_path, name)


def test_folder_source_may_live_outside_the_project(tmp_path):
    """The input folder is the user's: read in place, copied into data/raw/<name>/."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (20, 20), "red").save(photos / "a.png")
    project = tmp_path / "project"
    write_params(project, tiny_params(**{"datasets.digits.source": "folder", "datasets.digits.path": "../photos"}))
    result = CliRunner().invoke(app, ["fetch", "--params", str(project / "params.yaml")])
    assert result.exit_code == 0, result.output
    m = pd.read_csv(project / "data/raw/digits/manifest.csv")
    assert list(m["source"]) == ["a.png"] and (project / "data/raw/digits" / m["file"][0]).is_file()


def test_folder_source_reads_links_into_the_projects_dvc_cache(tmp_path):
    """`dvc add data/external/photos` with a symlink cache: every file is a link into .dvc/cache."""
    project = tmp_path / "project"
    cache = project / ".dvc/cache/files/md5/ab"
    cache.mkdir(parents=True)
    Image.new("RGB", (20, 20), "red").save(cache / "cdef", format="PNG")
    photos = project / "data/external/photos"
    photos.mkdir(parents=True)
    os.symlink(cache / "cdef", photos / "a.png")
    os.symlink(tmp_path, photos / "b.png")  # anywhere else: still not followed
    write_params(
        project, tiny_params(**{"datasets.digits.source": "folder", "datasets.digits.path": "data/external/photos"})
    )
    result = CliRunner().invoke(app, ["fetch", "--params", str(project / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(project / "data/raw/digits/manifest.csv")["source"]) == ["a.png"]
    ignored = pd.read_csv(project / "data/raw/digits/ignored.csv")
    assert list(ignored["source"]) == ["b.png"]
