"""extractor, sample, evaluate, report: outputs exist and the metrics measure what they claim."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core import paths
from dcganlab.evaluation.extractor import DomainNet, load_extractor
from dcganlab.evaluation.metrics import fid_kid_features
from dcganlab.gan.sampling import interpolate


@pytest.fixture
def trained(prepared):
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor
    from dcganlab.training.loop import train

    data = load_processed(paths.processed_dir(prepared.root, "digits"))
    train_extractor(data, prepared.extractor, prepared.seed, paths.extractor_path(prepared.root, "digits"), "digits")
    train(prepared, "tiny", progress=False)
    return prepared


def test_extractor_is_a_classifier_on_labeled_digits(trained):
    net, info = load_extractor(paths.extractor_path(trained.root, "digits"))
    assert info["kind"] == "classifier" and info["features"] == 16 and 0.0 <= info["test_accuracy"] <= 1.0
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 16)


def test_unlabeled_data_gets_an_autoencoder(tmp_path):
    from dcganlab.core.config import ExtractorParams
    from dcganlab.evaluation.extractor import train_extractor

    rng = np.random.default_rng(0)
    data = {
        "images": rng.integers(0, 256, (30, 3, 16, 16)).astype(np.uint8),
        "labels": np.full(30, -1),
        "split": (np.arange(30) % 5 == 0).astype(np.uint8),
        "stats": {"classes": []},
    }
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


def test_domain_net_reports_num_features_to_torchmetrics():
    assert DomainNet(1, 16, 24, 10).num_features == 24


# ---------------------------------------------------------------- the full evaluation record
SCHEMA_KEYS = {
    "fid",
    "kid",
    "kid_std",
    "kid_subset_size",
    "fid_real_floor",
    "extractor",
    "n_fake",
    "n_real",
    "reference_split",
    "images_per_s",
    "train_wall_s",
    "epochs",
    "variant",
    "dataset",
    "precision",
    "recall",
    "pr_k",
    "precision_real_floor",
    "recall_real_floor",
    "diversity_ssim",
    "diversity_ssim_real",
    "ssim_pairs",
    "class_accuracy",
    "mode_coverage",
    "linear_probe",
    "fid_ranked",
    "inception",
    "inception_status",
    "eval_seconds",
    "density",
    "coverage",
    "prdc_k",
    "density_real_floor",
    "coverage_real_floor",
}


def _mlflow_metrics(root, name):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    run_id = json.loads(paths.run_file(paths.state_dir(root, name)).read_text())["run_id"]
    return mlflow.MlflowClient(), run_id


def test_evaluate_stores_every_metric_with_how_it_was_computed(trained):
    from dcganlab.stages.evaluate import run as evaluate

    m = evaluate(trained, "tiny")
    assert SCHEMA_KEYS <= set(m)
    assert json.loads(paths.eval_path(trained.root, "tiny").read_text()) == json.loads(json.dumps(m))
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and m["pr_k"] == 3
    assert 0 <= m["precision_real_floor"] <= 1 and 0 <= m["recall_real_floor"] <= 1
    assert 0 <= m["coverage"] <= 1 and m["density"] >= 0 and m["prdc_k"] == m["pr_k"]
    assert 0 < m["coverage_real_floor"] <= 1 and m["density_real_floor"] > 0
    assert -1 <= m["diversity_ssim"] <= 1 and -1 <= m["diversity_ssim_real"] < 1 and m["ssim_pairs"] == 20
    assert m["class_accuracy"] is None  # unconditional model
    cov = m["mode_coverage"]
    assert cov["num_classes"] == 10 and cov["n"] == 40 and sum(cov["histogram"].values()) == pytest.approx(1.0)
    assert 0 <= cov["classes_covered"] <= 10 and cov["kl_to_uniform"] >= 0
    probe = m["linear_probe"]
    assert 0 <= probe["d_features"] <= 1 and 0 <= probe["pixels"] <= 1
    assert probe["train_n"] == 96 and probe["eval_n"] == 24 and "test" in probe["eval_split"]
    assert m["fid_ranked"] > 0 and m["fid_ranked_factor"] == 2
    assert m["inception"] is None and m["inception_status"].startswith("unavailable: no weights at")
    assert m["eval_seconds"] > 0
    client, run_id = _mlflow_metrics(trained.root, "tiny")
    logged = client.get_run(run_id).data.metrics
    assert logged["precision"] == m["precision"] and logged["linear_probe.d_features"] == probe["d_features"]
    assert logged["coverage"] == m["coverage"] and logged["density"] == m["density"]
    assert logged["mode_coverage.classes_covered"] == cov["classes_covered"] and "fid_ranked" in logged


def test_conditional_model_gets_per_class_accuracy(prepared):
    from conftest import tiny_params, write_params

    from dcganlab.core.config import load_params
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor
    from dcganlab.stages.evaluate import run as evaluate
    from dcganlab.training.loop import train

    write_params(prepared.root, tiny_params(**{"experiments.tiny.variant": "cgan"}))
    p = load_params(prepared.root / "params.yaml")
    data = load_processed(paths.processed_dir(p.root, "digits"))
    train_extractor(data, p.extractor, p.seed, paths.extractor_path(p.root, "digits"), "digits")
    train(p, "tiny", progress=False)
    acc = evaluate(p, "tiny")["class_accuracy"]
    assert set(acc["per_class"]) == {str(i) for i in range(10)} and acc["n_per_class"] == 4
    assert 0 <= acc["mean"] <= 1 and 0 <= acc["classifier_test_accuracy"] <= 1


# ---------------------------------------------------------------- the inception extractor
def _random_inception_weights(path, monkeypatch):
    """torch-fidelity's InceptionV3 with random He-initialised weights, saved as a state dict
    (the real file cannot be downloaded here). Its constructor insists on loading weights, so
    loading is stubbed out while the structure is built."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    with monkeypatch.context() as m:
        m.setattr(tf_inception.torch, "load", lambda *a, **k: {})
        m.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        net = tf_inception.FeatureExtractorInceptionV3("x", ["2048"], feature_extractor_weights_path="stub")
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):  # default init fades to constant features over 90 layers
            torch.nn.init.kaiming_normal_(module.weight)
    torch.save(net.state_dict(), path)
    return path


def test_inception_extractor_loads_a_weights_file_and_feeds_fid(tmp_path, monkeypatch):
    from dcganlab.evaluation.inception import load_inception

    weights = _random_inception_weights(tmp_path / "w.pth", monkeypatch)
    net, status = load_inception("auto", weights, url="")
    assert status == "used" and net.num_features == 2048
    gray = torch.rand(2, 1, 16, 16) * 2 - 1  # gray, 16x16: repeated to RGB, resized to 299 inside
    feats = net(torch.cat([gray, -gray]))  # one batch: InceptionV3 at 299x299 is slow on a CPU
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1])
    scores = fid_kid_features(feats[:2], feats[2:], kid_subset=2)
    assert np.isfinite(scores["fid"]) and scores["fid"] > 0


def test_inception_unavailable_is_reported_not_raised(tmp_path):
    from dcganlab.evaluation.inception import load_inception

    assert load_inception("off", tmp_path / "w.pth", "") == (None, "unavailable: evaluate.inception is off")
    net, status = load_inception("auto", tmp_path / "w.pth", "http://127.0.0.1:9/w.pth")  # nothing listens
    assert net is None and status.startswith("unavailable: no weights at") and "download failed" in status
    assert not (tmp_path / "w.pth").exists()  # no partial file left behind
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    net, status = load_inception("auto", tmp_path / "bad.pth", "")
    assert net is None and status.startswith("unavailable: weights at") and "did not load" in status


# ---------------------------------------------------------------- quality over training
def test_quality_stage_writes_one_row_per_saved_epoch(prepared):
    import pandas as pd
    from conftest import tiny_params, write_params

    from dcganlab.core.config import load_params
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor
    from dcganlab.training.loop import train

    write_params(prepared.root, tiny_params(**{"experiments.tiny.epochs": 2}))
    p = load_params(prepared.root / "params.yaml")
    data = load_processed(paths.processed_dir(p.root, "digits"))
    train_extractor(data, p.extractor, p.seed, paths.extractor_path(p.root, "digits"), "digits")
    train(p, "tiny", progress=False)
    result = CliRunner().invoke(app, ["quality", "tiny", "--params", str(p.root / "params.yaml")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(p.root / "reports/quality/tiny.csv")
    history = pd.read_csv(p.root / "reports/tiny/losses.csv")
    assert list(table.columns) == ["epoch", "wall_s", "fid", "kid", "n_fake", "n_real"]
    assert table["epoch"].tolist() == [1, 2] and table["wall_s"].tolist() == pytest.approx(history["wall_s"].tolist())
    assert (table["fid"] > 0).all() and (table["n_fake"] == 20).all() and (table["n_real"] == 20).all()
    client, run_id = _mlflow_metrics(p.root, "tiny")
    curve = client.get_metric_history(run_id, "fid_curve")
    assert sorted(x.step for x in curve) == [1, 2]
    start = client.get_run(run_id).info.start_time
    assert sorted(x.timestamp - start for x in curve) == [int(1000 * w) for w in history["wall_s"]]


def test_quality_without_saved_generators_is_a_user_error(prepared):
    result = CliRunner().invoke(app, ["quality", "tiny", "--params", str(prepared.root / "params.yaml")])
    assert result.exit_code == 1 and "no saved epoch generators" in result.output


# ---------------------------------------------------------------- the champion generator
@pytest.fixture
def logged(prepared):
    """The tiny project trained for 3 epochs with its final generator registered in a private store."""
    from conftest import tiny_params, write_params

    from dcganlab.core.config import load_params
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor
    from dcganlab.training.loop import train

    uri = f"sqlite:///{prepared.root / 'mlflow.db'}"
    write_params(
        prepared.root, tiny_params(**{"experiments.tiny.epochs": 3, "train.log_model": True, "tracking.uri": uri})
    )
    p = load_params(prepared.root / "params.yaml")
    data = load_processed(paths.processed_dir(p.root, "digits"))
    train_extractor(data, p.extractor, p.seed, paths.extractor_path(p.root, "digits"), "digits")
    train(p, "tiny", progress=False)
    import mlflow

    mlflow.set_tracking_uri(uri)
    return p, mlflow.MlflowClient(uri)


def _outputs(model_uri: str, path, z: np.ndarray) -> tuple:
    """(what the registered model draws, what the generator file draws) for the same latents."""
    import mlflow

    from dcganlab.gan.modelfile import load_model
    from dcganlab.gan.sampling import generate

    G, _, _ = load_model(path)
    return mlflow.pyfunc.load_model(model_uri).predict(z), generate(G, torch.from_numpy(z), None).numpy()


def test_quality_crowns_the_best_epoch_champion_and_keeps_latest_on_the_final(logged):
    import pandas as pd

    from dcganlab.core.tracking import EPOCH_TAG
    from dcganlab.evaluation.curves import best_epoch
    from dcganlab.stages.quality import _crown_champion

    p, client = logged
    result = CliRunner().invoke(app, ["quality", "tiny", "--params", str(p.root / "params.yaml")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(p.root / "reports/quality/tiny.csv")
    crowned = client.get_model_version_by_alias("tiny", "champion")
    assert crowned.tags.get(EPOCH_TAG, "3") == str(best_epoch(table))  # no tag: the final version (epoch 3)

    files = paths.saved_epochs(paths.generators_dir(paths.state_dir(p.root, "tiny")))
    assert sorted(files) == [1, 2, 3]
    z = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    # the curve says epoch 1 is best: its generator becomes a version with alias champion
    early = table.assign(fid=[1.0, 2.0, 3.0])
    _crown_champion(p, "tiny", early, files)
    champion = client.get_model_version_by_alias("tiny", "champion")
    assert champion.tags[EPOCH_TAG] == "1"
    served, ours = _outputs("models:/tiny@champion", files[1], z)
    np.testing.assert_allclose(served, ours, atol=1e-6)
    served, ours = _outputs("models:/tiny/latest", paths.model_path(p.root, "tiny"), z)  # latest: still the final
    np.testing.assert_allclose(served, ours, atol=1e-6)
    count = len(client.search_model_versions("name='tiny'"))
    _crown_champion(p, "tiny", early, files)  # a rerun registers nothing new
    assert len(client.search_model_versions("name='tiny'")) == count
    assert client.get_model_version_by_alias("tiny", "champion").version == champion.version
    # the last epoch is best: champion is the final generator's version
    _crown_champion(p, "tiny", table.assign(fid=[3.0, 2.0, 1.0]), files)
    final = client.get_model_version_by_alias("tiny", "champion")
    assert EPOCH_TAG not in final.tags and final.run_id == champion.run_id
    served, ours = _outputs("models:/tiny@champion", paths.model_path(p.root, "tiny"), z)
    np.testing.assert_allclose(served, ours, atol=1e-6)
    assert client.get_run(final.run_id).data.tags["best_epoch"] == "3"


@pytest.mark.parametrize("robust_from, expected", [(0, True), (16, True), (17, False)])
def test_the_extractor_low_passes_images_from_robust_from_and_records_it(tmp_path, robust_from, expected):
    from dcganlab.core.config import ExtractorParams
    from dcganlab.evaluation.extractor import load_extractor, train_extractor

    rng = np.random.default_rng(0)
    data = {
        "images": rng.integers(0, 256, (40, 1, 16, 16)).astype(np.uint8),
        "labels": np.arange(40) % 2,
        "split": (np.arange(40) % 5 == 0).astype(np.uint8),
        "stats": {"classes": ["a", "b"]},
    }
    p = ExtractorParams(epochs=1, batch_size=8, features=8, robust_from=robust_from)
    info = train_extractor(data, p, 0, tmp_path / "x.pt", "d")
    net, loaded = load_extractor(tmp_path / "x.pt")
    assert info["lowpass"] is expected and loaded["lowpass"] is expected and net.encoder.lowpass is expected
    assert info["lr_schedule"] == "cosine"
