import re

import pytest
import yaml
from conftest import tiny_params, write_params
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core.config import check_params, load_params, parse_params
from dcganlab.core.errors import ParamsError


def test_the_repository_params_are_valid():
    from pathlib import Path

    p = load_params(Path(__file__).parents[1] / "params.yaml")
    assert p.experiments and p.datasets
    for e in p.experiments.values():
        assert e.dataset in p.datasets


def test_yaml_scientific_notation_is_a_float(tmp_path):
    raw = tiny_params(**{"experiments.tiny.lr_g": "2e-4"})
    assert parse_params(raw).experiments["tiny"].lr_g == pytest.approx(2e-4)


BAD_VALUES = [
    ("experiments.tiny.lerning_rate", 0.1, "experiments.tiny.lerning_rate: unknown key"),
    ("train.lerning_rate", 0.1, "train.lerning_rate: unknown key"),
    ("lerning_rate", 0.1, "lerning_rate: unknown key"),
    ("experiments.tiny.variant", "stylegan", "unknown variant 'stylegan'"),
    ("experiments.tiny.dataset", "celebs", "unknown dataset 'celebs'"),
    ("experiments.tiny.lr_d", 0.0, "lr_d: must be > 0"),
    ("experiments.tiny.lr_g", -2e-4, "lr_g: must be > 0"),
    ("experiments.tiny.lr_g", float("nan"), "lr_g: must be a finite number"),
    ("experiments.tiny.feature_matching", float("inf"), "feature_matching: must be a finite number"),
    ("experiments.tiny.batch_size", 1, "batch_size: must be >= 2"),
    ("experiments.tiny.batch_size", 32.0, "batch_size: expected int"),
    ("experiments.tiny.epochs", "ten", "expected int"),
    ("experiments.tiny.epochs", 0, "epochs: must be >= 1"),
    ("experiments.tiny.beta1", 1.0, "beta1/beta2: must be in"),
    ("experiments.tiny.noise", "gaussian", "noise: must be 'normal' or 'uniform'"),
    ("experiments.tiny.noise", 3, "noise: expected str"),
    ("experiments.tiny.seed_offset", -1, "seed_offset: must be >= 0"),
    ("datasets.digits.source", "imagenet", "unknown source 'imagenet'"),
    ("datasets.digits.image_size", 40, "cannot produce 40x40"),
    ("datasets.digits.channels", 2, "channels: must be 1 or 3"),
    ("datasets.digits.detect_faces", "yes please", "detect_faces: expected bool"),
    ("datasets.digits.test_fraction", 1.0, "test_fraction: must be in"),
    ("datasets.digits.max_pixels", 0, "max_pixels: must be >= 1"),
    ("datasets.digits", "mnist", "datasets.digits: expected a mapping"),
    ("seed", -1, "seed: must be in 0..4294967295"),
    ("seed", "zero", "seed: expected int"),
    ("train.device", "gpu", "train.device: 'gpu' is not"),
    ("train.serve_max_latents", 0, "train.serve_max_latents: must be in 1..4096"),
    ("train.serve_max_latents", 4097, "train.serve_max_latents: must be in 1..4096"),
    ("train.threads", -1, "train.threads: must be in 0..1024"),
    ("train.threads", 1025, "train.threads: must be in 0..1024"),
    ("evaluate.batch_size", 0, "evaluate.batch_size: must be >= 1"),
    ("extractor.features", 0, "extractor.features: must be >= 1"),
    ("extractor.work_size", 4, "extractor.work_size: must be 0 (native) or >= 8"),
    ("extractor.lr_schedule", "step", "extractor.lr_schedule: 'step' is not cosine or constant"),
    ("extractor.robust_from", -1, "extractor.robust_from: must be >= 0"),
    ("sample.interpolation_pairs", 0, "sample.interpolation_pairs: must be >= 1"),
    ("train", [1, 2], "train: expected a mapping"),
]


@pytest.mark.parametrize("key,value,message", BAD_VALUES)
def test_invalid_params_are_rejected_with_one_clear_message(key, value, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        parse_params(tiny_params(**{key: value}))
    _, errors = check_params(tiny_params(**{key: value}))
    assert len(errors) == 1, errors  # one message per error, no knock-on messages


KEY_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_]+)?: ")  # e.g. experiments.tiny.beta1/beta2:


@pytest.mark.parametrize("key,value,message", BAD_VALUES)
def test_each_message_starts_with_the_params_yaml_key_path(key, value, message):
    """The key path is what a user greps params.yaml for, or passes to `dvc exp run -S`."""
    _, errors = check_params(tiny_params(**{key: value}))
    assert KEY_PATH.match(errors[0]) and key in errors[0], errors


def test_yes_from_dvc_exp_run_set_is_a_bool_only_where_a_bool_belongs(tmp_path):
    """`dvc exp run -S key=yes` writes a bare `yes`, which PyYAML reads as True: right for a bool,
    an error for an int or a float (a lax float parser would have taken it as 1.0)."""
    keys = ("datasets.digits.detect_faces", "experiments.tiny.epochs", "experiments.tiny.lr_g")
    text = yaml.safe_dump(tiny_params(**{k: "yes_here" for k in keys}), sort_keys=False)
    (tmp_path / "params.yaml").write_text(text.replace("yes_here", "yes"))
    with pytest.raises(ParamsError) as info:
        load_params(tmp_path / "params.yaml")
    message = str(info.value)
    assert message.startswith("invalid params: ") and "\n" not in message
    assert sorted(message.removeprefix("invalid params: ").split("; ")) == [
        "experiments.tiny.epochs: expected int, got True",
        "experiments.tiny.lr_g: expected float, got True",
    ]


@pytest.mark.parametrize("key,value,message", BAD_VALUES[::6])
def test_cli_exits_2_before_any_work(tmp_path, key, value, message):
    path = write_params(tmp_path, tiny_params(**{key: value}))
    result = CliRunner().invoke(app, ["fetch", "--params", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid params") and result.output.count("\n") == 1
    assert message in result.output
    assert not (tmp_path / "data").exists()


def test_download_sources_check_their_split():
    with pytest.raises(ParamsError, match="'valid' is not a split of cifar10"):
        parse_params(tiny_params(**{"datasets.digits.source": "cifar10", "datasets.digits.split": "valid"}))
    parse_params(
        tiny_params(
            **{
                "datasets.digits.source": "celeba",
                "datasets.digits.split": "valid",
                "experiments.tiny.variant": "dcgan",
            }
        )
    )


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "eval", "extractors", "Samples"])
def test_names_cannot_leave_or_clash_with_their_folders(name):
    raw = tiny_params()
    raw["experiments"] = {name: raw["experiments"]["tiny"]}
    with pytest.raises(ParamsError, match=re.escape(f"experiments.{name}: name")):
        parse_params(raw)
    raw = tiny_params()
    raw["datasets"] = {name: raw["datasets"]["digits"]}
    raw["experiments"]["tiny"]["dataset"] = name
    if name.lower() not in ("eval", "extractors", "samples"):  # those are fine dataset names
        with pytest.raises(ParamsError, match=re.escape(f"datasets.{name}: name")):
            parse_params(raw)


def test_a_broken_datasets_section_is_one_message_not_one_per_experiment():
    raw = tiny_params(datasets=["digits"])
    _, errors = check_params(raw)
    assert errors == ["datasets: expected a mapping of name -> settings"]


def test_every_error_is_reported_at_once():
    raw = tiny_params(**{"experiments.tiny.lr_d": -1.0, "experiments.tiny.batch_size": 0})
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert "lr_d" in str(info.value) and "batch_size" in str(info.value)


def test_type_errors_and_range_errors_are_listed_together(tmp_path):
    raw = tiny_params(
        **{
            "experiments.tiny.epochs": "ten",
            "experiments.tiny.lerning_rate": 0.1,
            "datasets.digits.channels": 2,
            "train.device": "gpu",
        }
    )
    _, errors = check_params(raw)
    assert len(errors) == 4, errors
    result = CliRunner().invoke(app, ["train", "--params", str(write_params(tmp_path, raw))])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    for part in ("epochs: expected int", "lerning_rate: unknown key", "channels: must be 1 or 3", "train.device"):
        assert part in result.output


def test_cli_exits_2_with_one_line_on_bad_params(tmp_path):
    path = write_params(tmp_path, tiny_params(**{"experiments.tiny.lerning_rate": 0.1}))
    result = CliRunner().invoke(app, ["train", "--params", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: invalid params")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("- seed\n- datasets\n", "the top level: expected a mapping"),
        ("just a string\n", "the top level: expected a mapping"),
        ("seed: 0\nseed: 1\n", "line 2: duplicate key 'seed'"),
        ("train:\n  device: cpu\n  grid_size: 4\n  device: cuda\n", "line 4: duplicate key 'device'"),
    ],
)
def test_params_file_shape_errors_exit_2(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=re.escape(message)):
        load_params(tmp_path / "params.yaml")
    result = CliRunner().invoke(app, ["report", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output


def test_yaml_anchors_and_merge_keys_are_not_duplicates(tmp_path):
    raw = tiny_params()
    text = yaml.safe_dump(raw, sort_keys=False).replace("experiments:\n  tiny:\n", "experiments:\n  tiny: &base\n")
    text += "  # a second experiment from the first\n"
    (tmp_path / "params.yaml").write_text(
        text.replace("train:\n", "  tiny2:\n    <<: *base\n    epochs: 2\ntrain:\n", 1)
    )
    p = load_params(tmp_path / "params.yaml")
    assert p.experiments["tiny2"].epochs == 2 and p.experiments["tiny2"].z_dim == p.experiments["tiny"].z_dim


def test_missing_or_broken_params_file(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")
    (tmp_path / "latin1.yaml").write_bytes("seed: 0 # café\n".encode("latin-1"))
    with pytest.raises(ParamsError, match="not UTF-8 text"):
        load_params(tmp_path / "latin1.yaml")


def test_every_single_bad_value_gives_one_message_and_no_crash():
    """Each leaf of the tiny params set to each kind of wrong value: exactly one message."""
    from conftest import TINY_PARAMS

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    for key in leaves(TINY_PARAMS):
        for value in ("x", -1, 1e30, [1], {"a": 1}, float("nan"), 2**70):
            _, errors = check_params(tiny_params(**{key: value}))
            assert len(errors) <= 1, (key, value, errors)


# every size and rate has an upper bound (config.py says why each); the cases first
UPPER_BOUNDS = [
    ("experiments.tiny.lr_g", 10.0),
    ("experiments.tiny.ngf", 512),
    ("experiments.tiny.z_dim", 4096),
    ("train.grid_size", 1024),
    ("experiments.tiny.lr_d", 10.0),
    ("experiments.tiny.ndf", 512),
    ("experiments.tiny.epochs", 100_000),
    ("experiments.tiny.batch_size", 65536),
    ("experiments.tiny.feature_matching", 1e6),
    ("experiments.tiny.smooth_sigma", 100.0),
    ("experiments.tiny.seed_offset", 2**32 - 1),
    ("datasets.digits.min_face_size", 100_000),
    ("datasets.digits.scale_factor", 10.0),
    ("datasets.digits.min_neighbors", 1000),
    ("datasets.digits.max_pixels", 10**9),
    ("datasets.digits.workers", 256),
    ("train.checkpoint_every_steps", 10**9),
    ("train.collapse_steps", 10**9),
    ("sample.num", 1024),
    ("sample.interpolation_pairs", 64),
    ("sample.interpolation_steps", 64),
    ("sample.arithmetic_rows", 64),
    ("sample.arithmetic_pool", 100_000),
    ("sample.arithmetic_mean_of", 100),
    ("extractor.epochs", 100_000),
    ("extractor.batch_size", 65536),
    ("extractor.lr", 10.0),
    ("extractor.features", 4096),
    ("extractor.work_size", 1024),
    ("extractor.black_level", 255.0),
    ("extractor.robust_from", 1024),
    ("evaluate.num_samples", 50_000),
    ("evaluate.kid_subset_size", 50_000),
    ("evaluate.batch_size", 65536),
    ("evaluate.pr_k", 100),
    ("evaluate.ssim_pairs", 10**6),
    ("evaluate.probe_train_n", 10**6),
    ("evaluate.nice_factor", 20),
    ("evaluate.curve_samples", 50_000),
    ("evaluate.inception_samples", 50_000),
]


@pytest.mark.parametrize("key,limit", UPPER_BOUNDS, ids=[k for k, _ in UPPER_BOUNDS])
def test_every_size_and_rate_has_an_upper_bound_with_one_message(key, limit):
    pool = {"sample.arithmetic_pool": 3 * limit} if key == "sample.arithmetic_mean_of" else {}  # pool >= 3 x mean_of
    _, errors = check_params(tiny_params(**{key: limit, **pool}))
    assert errors == []
    over = limit * 10 if isinstance(limit, int) else 1e308  # the 1e7, 1e10, 1e308
    _, errors = check_params(tiny_params(**{key: over, **pool}))
    assert errors == [f"{key}: must be <= {limit if isinstance(limit, int) else f'{limit:g}'}"]


def test_the_upper_bounds_list_every_size_and_rate():
    """A new numeric key in params needs a bound (and this list an entry)."""
    from dataclasses import fields

    from dcganlab.core import config

    sections = {
        "datasets.digits": config.DatasetParams,
        "experiments.tiny": config.ExperimentParams,
        "train": config.TrainParams,
        "sample": config.SampleParams,
        "extractor": config.ExtractorParams,
        "evaluate": config.EvaluateParams,
    }
    numeric = {
        f"{where}.{f.name}" for where, cls in sections.items() for f in fields(cls) if f.type in ("int", "float")
    }
    bounded_both_ways = {
        "datasets.digits.image_size",
        "datasets.digits.channels",
        "datasets.digits.margin",
        "datasets.digits.test_fraction",
        "experiments.tiny.beta1",
        "experiments.tiny.beta2",
        "experiments.tiny.momentum",
        "experiments.tiny.real_label",
        "experiments.tiny.fake_label",
        "experiments.tiny.lr_decay",
        "experiments.tiny.flip_p",
        "experiments.tiny.label_flip",
        "train.collapse_real",
        "train.collapse_fake",
        "train.serve_max_latents",
        "train.threads",
    }
    caps = {"datasets.digits.limit"}  # at most this many images: a huge one means all, nothing is allocated
    assert numeric - bounded_both_ways - caps == {k for k, _ in UPPER_BOUNDS}
