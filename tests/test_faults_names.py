"""Faults tried on names, params and leftovers (issue #21): hostile names in params.yaml never
reach a shell as code, whatever the stage; temp folders of killed stages are removed on the next
run (never a live writer's); params have upper bounds; an alias bomb or a huge value gives one
short line; an unreadable subfolder of a folder dataset is listed as ignored."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import git_project, prepare_project, tiny_params, write_params
from PIL import Image
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core.config import load_params, parse_params
from dcganlab.core.errors import ParamsError

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]
STAGES = ("fetch", "prepare", "extractor", "train", "sample", "evaluate", "quality")  # every foreach stage


def hostile_names(marks: Path) -> list[str]:
    """Names that run `touch marks/M<i>` if a shell sees them as code, quoted or not; the first
    holds every kind at once (';', '$()', backticks, a space)."""
    return [
        f"a;touch {marks}/M1;`touch {marks}/M2`$(touch {marks}/M3) x",
        f'q";touch {marks}/M4;"',
        f"s';touch {marks}/M5;'",
        f"nl\ntouch {marks}/M6",
    ]


def hostile_params(names: list[str]) -> dict:
    raw = tiny_params()
    dataset, experiment = raw["datasets"].pop("digits"), raw["experiments"].pop("tiny")
    for name in names:
        raw["datasets"][name] = dict(dataset)
        raw["experiments"][name] = {**experiment, "dataset": name}
    return raw


def stage_deps(root: Path, name: str) -> None:
    """Stand-ins for a stage's data deps, so that DVC runs its command (it deletes the stage's
    outputs first, and stops before the command when a dep is missing)."""
    for folder in (f"data/raw/{name}", f"data/processed/{name}", f"models/{name}/train"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for file in (f"models/extractors/{name}.pt", f"models/{name}/model.pt", f"reports/{name}/train.json"):
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_text("stand-in")


# ---------------------------------------------------------------- item 1: names never reach a shell
def test_no_stage_command_in_dvc_yaml_holds_an_interpolated_value():
    stages = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())["stages"]
    commands = {name: s.get("do", s)["cmd"] for name, s in stages.items()}
    assert set(STAGES) < set(commands) and not [c for c in commands.values() if "${" in str(c)]


def test_hostile_names_run_nothing_in_any_dvc_stage(tmp_path):
    """The real `dvc repro`: every foreach stage for the name holding every kind, and train for
    the quoting and newline ones. Nothing they hold runs; each stage ends with dcganlab's one-line
    params error (exit 2). Downstream stages first: DVC deletes a stage's outputs before its
    command, and later stages read them (here: stand-ins)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    names = hostile_names(marks)
    work = tmp_path / "project"
    env = git_project(work, hostile_params(names))
    (work / "dvc.lock").unlink()
    for name in names:
        stage_deps(work, name)
    targets = [f"{stage}@{names[0]}" for stage in reversed(STAGES)] + [f"train@{n}" for n in names[1:]]
    result = subprocess.run(
        [*DVC, "repro", "--keep-going", "--single-item", *targets],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert os.listdir(marks) == []  # nothing ran
    assert result.returncode != 0 and "Traceback" not in out
    for stage in STAGES:
        runs = 1 + (len(names) - 1) * (stage == "train")
        assert out.count(f"failed to run: dcganlab {stage} --dvc-stage, exited with 2") == runs, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(targets) and all(e.startswith("error: invalid params: ") for e in errors), out[-3000:]
    assert all(e.count("name may hold only") == 2 * len(names) for e in errors)  # each dataset and experiment


def test_each_stage_takes_its_name_from_dvc_stage_and_refuses_a_hostile_one_in_one_line(tmp_path, monkeypatch):
    marks = tmp_path / "marks"
    names = hostile_names(marks)
    path = write_params(tmp_path, hostile_params(names))
    for stage in STAGES:
        for name in names:
            monkeypatch.setenv("DVC_STAGE", f"{stage}@{name}")
            result = CliRunner().invoke(app, [stage, "--dvc-stage", "--params", str(path)])
            assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
            assert result.output.startswith("error: invalid params: ") and "nl\\ntouch" in result.output
    assert not marks.exists() and not (tmp_path / "data").exists()


def test_dvc_stage_gives_the_name_and_a_bad_address_is_one_line(tmp_path, monkeypatch):
    path = write_params(tmp_path, tiny_params())
    for address in ("train@nope", "sub/dvc.yaml:train@nope"):  # a dvc.yaml outside the root has a path prefix
        monkeypatch.setenv("DVC_STAGE", address)
        result = CliRunner().invoke(app, ["train", "--dvc-stage", "--params", str(path)])
        assert result.exit_code == 1 and result.output == "error: unknown experiment 'nope' (params.yaml has: tiny)\n"
    monkeypatch.setenv("DVC_STAGE", "fetch@tiny")
    result = CliRunner().invoke(app, ["train", "--dvc-stage", "--params", str(path)])
    assert (
        result.exit_code == 1
        and result.output.count("\n") == 1
        and "is 'fetch@tiny', not 'train@<name>'" in result.output
    )
    result = CliRunner().invoke(app, ["train", "tiny", "--dvc-stage", "--params", str(path)])
    assert result.exit_code == 1 and "not both" in result.output


# ---------------------------------------------------------------- item 7: leftovers of killed stages
# `dcganlab` that SIGKILLs itself as it is about to swap in the stage's finished temp folder:
# the worst moment (a whole dataset left behind), reached every time, however fast the machine
KILLED_BEFORE_SWAP = """
import os, signal, sys
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if os.path.basename(src).startswith(".digits.tmp"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
from dcganlab.cli import main
sys.argv[0] = "dcganlab"
main()
"""


@pytest.mark.parametrize("stage,area", [("fetch", "raw"), ("prepare", "processed")])
def test_a_killed_stage_leaves_a_temp_folder_the_next_run_removes_unless_its_writer_lives(tmp_path, stage, area):
    if stage == "prepare":
        prepare_project(tmp_path)
    else:
        write_params(tmp_path, tiny_params())
    args = [stage, "digits", "--params", str(tmp_path / "params.yaml")]
    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_SWAP, *args], capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    folder = tmp_path / "data" / area
    [dead] = [p for p in folder.iterdir() if p.name.startswith(".digits.tmp")]  # the killed run's, complete
    assert dead.is_dir() and any(dead.iterdir())
    live = subprocess.Popen(["sleep", "300"])  # a writer still at work: its temp folders must stay
    try:
        (folder / f".digits.tmp{live.pid}").mkdir()
        (folder / f".digits.old{live.pid}").mkdir()
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        subprocess.run(["dcganlab", *args], env=env, check=True, capture_output=True, timeout=300)
        leftovers = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
        assert leftovers == [f".digits.old{live.pid}", f".digits.tmp{live.pid}"], leftovers
        assert not dead.exists() and (folder / "digits" / "manifest.csv").is_file()
    finally:
        live.kill()
        live.wait()


def test_atomic_files_left_by_a_dead_writer_are_removed_not_a_live_ones(tmp_path):
    """The single-file outputs (model.pt, extractor .pt, eval JSON...) are written the same way."""
    from dcganlab.core.atomic import write_json

    gone = subprocess.Popen(["true"])
    gone.wait()
    live = subprocess.Popen(["sleep", "300"])
    try:
        for pid in (gone.pid, live.pid):
            (tmp_path / f".model.tmp{pid}.json").write_text("half")
        (tmp_path / f".other.tmp{gone.pid}.json").write_text("another file's: not ours to judge here")
        write_json(tmp_path / "model.json", {"a": 1})
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            f".model.tmp{live.pid}.json",
            f".other.tmp{gone.pid}.json",
            "model.json",
        ]
    finally:
        live.kill()
        live.wait()


# ---------------------------------------------------------------- item 8: bounds, huge values, folders
def _bomb(levels: int) -> str:
    """A YAML alias bomb: 10**levels strings from a few hundred bytes."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "{" + ", ".join(lines) + "}"


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_is_one_short_line_without_blowing_memory(tmp_path, levels):
    text = yaml.safe_dump(tiny_params(), sort_keys=False).replace("seed: 0", f"seed: {_bomb(levels)}")
    (tmp_path / "params.yaml").write_text(text)
    result = CliRunner().invoke(app, ["train", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and len(result.output) < 200, result.output[:300]
    assert "aliases expand to over" in result.output


def test_anchors_that_reuse_a_section_still_load(tmp_path):
    text = yaml.safe_dump(tiny_params(), sort_keys=False).replace("  tiny:\n", "  tiny: &base\n", 1)
    text = text.replace("train:\n", "  again:\n    <<: *base\n    epochs: 2\ntrain:\n", 1)
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").experiments["again"].epochs == 2


@pytest.mark.parametrize(
    "key,value",
    [
        ("experiments.tiny.noise", "n" * 10**6),
        ("train.device", ["x" * 1000] * 1000),
        ("seed", "9" * 5000),
        ("experiments.tiny.variant", "line\n" * 1000),
    ],
    ids=["1MB-string", "1MB-list", "5000-digit-int", "1000-lines"],
)
def test_a_huge_value_is_quoted_short_on_one_line(tmp_path, key, value):
    path = write_params(tmp_path, tiny_params(**{key: value}))
    if key == "seed":  # an int Python will not even read (over 4300 digits)
        path.write_text(yaml.safe_dump(tiny_params(), sort_keys=False).replace("seed: 0", f"seed: {value}"))
    result = CliRunner().invoke(app, ["train", "--params", str(path)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and len(result.output) < 400, result.output[:500]
    assert (key in result.output) if key != "seed" else "a value YAML cannot read" in result.output


def test_an_unreadable_subfolder_of_a_folder_dataset_is_listed_as_ignored(tmp_path, monkeypatch):
    """chmod 000, and as root (who reads it anyway) os.walk's listing fails as it would for a user."""
    from dcganlab.data.sources import fetch

    src = tmp_path / "photos"
    (src / "locked").mkdir(parents=True)
    Image.new("RGB", (20, 20), "red").save(src / "a.png")
    Image.new("RGB", (20, 20), "red").save(src / "locked" / "b.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    os.chmod(src / "locked", 0)
    try:
        if os.geteuid() == 0:
            monkeypatch.setattr(os, "scandir", scandir)
        ds = parse_params(
            tiny_params(**{"datasets.digits.source": "folder", "datasets.digits.path": str(src)})
        ).datasets["digits"]
        manifest = fetch(ds, tmp_path / "raw", tmp_path / "dl")
    finally:
        os.chmod(src / "locked", 0o755)
    assert list(manifest["source"]) == ["a.png"]
    ignored = pd.read_csv(tmp_path / "raw/ignored.csv")
    assert ignored.values.tolist() == [["locked", "unreadable folder (Permission denied)"]]


def test_no_params_name_or_value_makes_a_multiline_error():
    """The checks' own messages: a name with a newline is quoted (and the line is capped)."""
    raw = tiny_params()
    raw["experiments"]["bad\nname"] = raw["experiments"]["tiny"]
    raw["experiments"].update({f"e{i}!": raw["experiments"]["tiny"] for i in range(50)})
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert "\n" not in str(info.value) and re.search(r"experiments\.'bad\\nname': name may hold", str(info.value))
    assert str(info.value).endswith("more")
