"""train: the DCGAN networks, the one loop, checkpoints, resume and MLflow tracking."""

import json
import threading

import mlflow
import pytest
import torch
from conftest import prepare_project, tiny_params, write_params

from dcganlab.core import paths
from dcganlab.core.config import ExperimentParams, load_params
from dcganlab.gan.modelfile import load_model
from dcganlab.gan.models import dcgan, dcgan_init
from dcganlab.training.loop import train


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes_for_every_size(size, channels):
    G = dcgan.Generator(z_dim=10, channels=channels, image_size=size, ngf=4)
    D = dcgan.Discriminator(channels=channels, image_size=size, ndf=4)
    x = G(torch.randn(2, 10))
    assert x.shape == (2, channels, size, size) and x.abs().max() <= 1
    assert D(x).logit.shape == (2,)


def test_dcgan_64_matches_the_reference_architecture():
    G = dcgan.Generator(100, 3, 64, 64)
    D = dcgan.Discriminator(3, 64, 64)
    convs = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.out_channels for m in convs] == [512, 256, 128, 64, 3]
    assert isinstance(list(G.modules())[-1], torch.nn.Tanh)
    first = list(D.features)[:2]
    assert isinstance(first[0], torch.nn.Conv2d) and isinstance(first[1], torch.nn.LeakyReLU)  # no BN on input
    assert sum(p.numel() for p in G.parameters()) == 3576704  # pytorch/examples netG at nz=100, ngf=64


def test_dcgan_init():
    torch.manual_seed(0)
    G = dcgan.Generator(100, 3, 64, 64)
    G.apply(dcgan_init)
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    bn = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(w.std().item() - 0.02) < 0.001 and abs(bn.mean().item() - 1.0) < 0.01


def test_one_epoch_trains_both_networks_and_tracks_it(prepared):
    torch.manual_seed(0)
    summary = train(prepared, "tiny", progress=False)
    state = paths.state_dir(prepared.root, "tiny")
    ckpt = torch.load(state / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and set(ckpt) >= {"G", "D", "opt_g", "opt_d", "rng_cpu", "history"}
    G0 = dcgan.Generator(8, 1, 16, 4)
    torch.manual_seed(prepared.seed)
    G0.apply(dcgan_init)  # the initial weights (same seed, same construction order)
    assert not torch.equal(G0.state_dict()["main.0.weight"], ckpt["G"]["main.0.weight"])
    assert (state / "grids/epoch_0001.png").is_file() and (state / "generators/epoch_0001.pt").is_file()
    G, D, meta = load_model(paths.model_path(prepared.root, "tiny"))
    assert D is not None and D(G(torch.randn(2, 8))).logit.shape == (2,)
    assert G(torch.randn(3, 8)).shape == (3, 1, 16, 16)
    assert summary["epochs"] == 1 and summary["images_per_s"] > 0
    import resource  # train.json's peak memory is this (test) process's, in MiB

    assert summary["peak_rss_mb"] == pytest.approx(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rel=0.05)
    losses = (prepared.root / "reports/tiny/losses.csv").read_text().splitlines()
    assert losses[0].startswith("epoch,loss_d,loss_g,d_real,d_fake")

    run_id = json.loads((state / "mlflow_run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{prepared.root / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("variant", "dataset", "experiment")} == {
        "variant": "dcgan",
        "dataset": "digits",
        "experiment": "tiny",
    }
    assert "git_commit" in run.data.tags
    assert run.data.params["experiment.lr_g"] == "0.0002"
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= set(run.data.metrics)
    images = [a.path for a in client.list_artifacts(run_id, "images")]  # the epoch's grid, in the store
    assert any("samples+step+1+" in p and p.endswith(".png") for p in images), images
    # logged synchronously: MLflow's async image queue (polled once a second) cost ~1 s at the run's end
    assert not [t.name for t in threading.enumerate() if t.name.startswith("MLflowAsyncArtifacts")]


def test_resume_continues_the_same_run_and_ends_where_an_uninterrupted_run_ends(tmp_path):
    def setup(root, epochs):
        return prepare_project(root, tiny_params(**{"experiments.tiny.epochs": epochs}))

    straight = setup(tmp_path / "a", 2)
    train(straight, "tiny", progress=False)
    resumed = setup(tmp_path / "b", 1)
    train(resumed, "tiny", progress=False)  # "interrupted" after epoch 1
    run_id = json.loads((paths.state_dir(resumed.root, "tiny") / "mlflow_run.json").read_text())["run_id"]
    resumed = setup(tmp_path / "b", 2)
    train(resumed, "tiny", progress=False)  # rerun: resumes at epoch 2
    assert json.loads((paths.state_dir(resumed.root, "tiny") / "mlflow_run.json").read_text())["run_id"] == run_id
    a = torch.load(paths.model_path(straight.root, "tiny"), weights_only=True)["state_dict"]
    b = torch.load(paths.model_path(resumed.root, "tiny"), weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = mlflow.MlflowClient(f"sqlite:///{resumed.root / 'mlflow.db'}").get_metric_history(run_id, "loss_d")
    assert sorted(m.step for m in history) == [1, 2]


def test_changed_params_start_afresh(prepared, capsys):
    train(prepared, "tiny", progress=False)
    raw = tiny_params(**{"experiments.tiny.lr_d": 1e-3})
    write_params(prepared.root, raw)
    train(load_params(prepared.root / "params.yaml"), "tiny", progress=False)
    assert "starting afresh" in capsys.readouterr().out


def test_unknown_experiment_and_missing_data_are_one_line_errors(project):
    from typer.testing import CliRunner

    from dcganlab.cli import app

    result = CliRunner().invoke(app, ["train", "nope", "--params", str(project)])
    assert result.exit_code == 1 and result.output == "error: unknown experiment 'nope' (params.yaml has: tiny)\n"
    result = CliRunner().invoke(app, ["train", "tiny", "--params", str(project)])
    assert result.exit_code == 1 and "no processed data" in result.output and "Traceback" not in result.output


def test_experiment_params_round_trip_through_the_generator_file(prepared):
    train(prepared, "tiny", progress=False)
    _, _, meta = load_model(paths.model_path(prepared.root, "tiny"))
    assert meta["experiment"] == ExperimentParams(**tiny_params()["experiments"]["tiny"])


def test_grid_matches_torchvision_make_grid_pixel_for_pixel():
    """to_grid draws what make_grid drew before (train no longer imports torchvision)."""
    import numpy as np
    from PIL import Image
    from torchvision.utils import make_grid

    from dcganlab.gan.sampling import to_grid

    gen = torch.Generator().manual_seed(0)
    for n, c, size, nrow in [(64, 1, 16, 8), (10, 3, 8, 8), (3, 3, 8, 2), (1, 1, 8, 8)]:
        x = torch.rand(n, c, size, size, generator=gen) * 2.4 - 1.2  # beyond [-1, 1]: clamped
        grid = make_grid(x, nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)
        want = Image.fromarray(grid.mul(255).add_(0.5).clamp_(0, 255).byte().permute(1, 2, 0).numpy())
        assert np.array_equal(np.asarray(to_grid(x, nrow)), np.asarray(want)), (n, c, size, nrow)


def test_setup_errors_are_one_line_and_leave_no_state(prepared):
    """Every check of the loop's set-up (data shape, labels, size of the training split) fails
    before a checkpoint, a state dir or an MLflow run exists."""
    import numpy as np
    from typer.testing import CliRunner

    from dcganlab.cli import app

    root, folder = prepared.root, paths.processed_dir(prepared.root, "digits")
    labels, split = np.load(folder / "labels.npy"), np.load(folder / "split.npy")

    def fails_with(message, **overrides):
        write_params(root, tiny_params(**overrides))
        result = CliRunner().invoke(app, ["train", "tiny", "--params", str(root / "params.yaml")])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith("error: ") and message in result.output, result.output
        assert not paths.state_dir(root, "tiny").exists() and not (root / "mlflow.db").exists()

    fails_with("holds 1x16x16 images but params say 1x32x32", **{"datasets.digits.image_size": 32})
    np.save(folder / "labels.npy", np.full_like(labels, -1))
    fails_with("variant 'cgan' needs labeled images", **{"experiments.tiny.variant": "cgan"})
    np.save(folder / "labels.npy", labels)
    np.save(folder / "split.npy", np.where(np.arange(len(split)) == 0, 0, 1).astype(split.dtype))
    fails_with("has 1 training images; need at least 2")


def test_the_loop_reads_in_short_named_steps():
    """Issue #13: no function or method of the training loop is longer than about 60 lines."""
    import ast
    import inspect

    import dcganlab.training.loop as t

    tree = ast.parse(inspect.getsource(t))
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    assert {"_train", "set_up", "train_epoch", "end_epoch", "finish"} <= lengths.keys()
    assert {name: n for name, n in lengths.items() if n > 60} == {}
    assert lengths["_train"] <= 40  # the table of contents


@pytest.mark.parametrize("variant", ["dcgan", "cgan"])
def test_freezing_d_for_gs_update_changes_no_bit_of_either_network(variant, monkeypatch):
    """train_step skips D's weight gradients during G's update (the next D update discarded them);
    after three steps both networks are bit for bit what they are without the shortcut."""
    import contextlib

    from dcganlab.gan.variants import VARIANTS
    from dcganlab.training import step as step_module
    from dcganlab.training.step import StepNets, build_networks, train_step

    def three_steps():
        torch.manual_seed(0)
        e = ExperimentParams(variant=variant, dataset="x", batch_size=8, ngf=8, ndf=8, feature_matching=0.5)
        k = 10 if VARIANTS[variant].conditional else 0
        G, D = build_networks(e, 1, 16, k)
        opt_g, opt_d = VARIANTS[variant].optimizers(e, G, D)
        for _ in range(3):
            real = torch.rand(8, 1, 16, 16) * 2 - 1
            labels = torch.randint(10, (8,)) if k else None
            train_step(StepNets(G, D, opt_g, opt_d), e, real, labels, k)
        assert all(p.requires_grad for p in D.parameters())  # unfrozen afterwards
        return [p.detach().clone() for p in [*G.parameters(), *D.parameters()]]

    fast = three_steps()
    monkeypatch.setattr(step_module, "frozen", lambda D: contextlib.nullcontext())
    plain = three_steps()
    assert all(torch.equal(a, b) for a, b in zip(fast, plain))


def test_an_isa_capped_below_avx512_never_counts_as_native_bf16():
    """ONEDNN_MAX_CPU_ISA=AVX2 / ATEN_CPU_CAPABILITY=avx2 (how an AVX2-only CPU is reproduced):
    `amp: auto` must pick fp32 there, whatever the CPU's flags say."""
    import os
    import subprocess
    import sys

    code = "from dcganlab.training.accel import cpu_path; import json; print(json.dumps(cpu_path()))"
    for env in ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"ATEN_CPU_CAPABILITY": "avx2"}):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out)["native_bf16"] is False, env
