import pytest
from typer.testing import CliRunner

from conftest import tiny_params, write_params
from dcganlab.cli import app
from dcganlab.config import load_params, parse_params
from dcganlab.errors import ParamsError


def test_the_repository_params_are_valid():
    from pathlib import Path

    p = load_params(Path(__file__).parents[1] / "params.yaml")
    assert p.experiments and p.datasets
    for e in p.experiments.values():
        assert e.dataset in p.datasets


def test_yaml_scientific_notation_is_a_float(tmp_path):
    raw = tiny_params(**{"experiments.tiny.lr_g": "2e-4"})
    assert parse_params(raw).experiments["tiny"].lr_g == pytest.approx(2e-4)


@pytest.mark.parametrize("key,value,message", [
    ("experiments.tiny.lerning_rate", 0.1, "experiments.tiny.lerning_rate: unknown key"),
    ("train.lerning_rate", 0.1, "train.lerning_rate: unknown key"),
    ("experiments.tiny.variant", "stylegan", "unknown variant 'stylegan'"),
    ("experiments.tiny.dataset", "celebs", "unknown dataset 'celebs'"),
    ("experiments.tiny.lr_d", 0.0, "lr_d: must be > 0"),
    ("experiments.tiny.batch_size", 1, "batch_size: must be >= 2"),
    ("experiments.tiny.epochs", "ten", "expected int"),
    ("datasets.digits.source", "imagenet", "unknown source 'imagenet'"),
    ("datasets.digits.image_size", 40, "cannot produce 40x40"),
    ("datasets.digits.channels", 2, "channels: must be 1 or 3"),
])
def test_invalid_params_are_rejected_with_a_clear_message(key, value, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(tiny_params(**{key: value}))


def test_every_error_is_reported_at_once():
    raw = tiny_params(**{"experiments.tiny.lr_d": -1.0, "experiments.tiny.batch_size": 0})
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert "lr_d" in str(info.value) and "batch_size" in str(info.value)


def test_cli_exits_2_with_one_line_on_bad_params(tmp_path):
    path = write_params(tmp_path, tiny_params(**{"experiments.tiny.lerning_rate": 0.1}))
    result = CliRunner().invoke(app, ["train", "--params", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: invalid params")
    assert "Traceback" not in result.output


def test_missing_or_broken_params_file(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")
