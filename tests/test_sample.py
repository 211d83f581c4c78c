"""sample: every figure is written with its layout; the arithmetic, progression and filter
figures do what they say on constructed inputs."""

import json
import math

import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core import paths
from dcganlab.core.config import ExperimentParams, SampleParams
from dcganlab.evaluation.figures import (
    GAP,
    TITLE_H,
    _rows_by_class,
    closest_epochs,
    filter_grid,
    latent_arithmetic,
    progression,
)
from dcganlab.gan.variants import VARIANTS
from dcganlab.training.step import build_networks


# ---------------------------------------------------------------- the stage, end to end
@pytest.fixture
def trained_two(prepared):
    """The tiny project with a 2-epoch dcgan and a 1-epoch cgan, and the digit classifier."""
    from conftest import TINY_EXPERIMENT, tiny_params, write_params

    from dcganlab.core.config import load_params
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor
    from dcganlab.training.loop import train

    raw = tiny_params(**{"experiments.tiny.epochs": 2})
    raw["experiments"]["cond"] = {**TINY_EXPERIMENT, "variant": "cgan"}
    p = load_params(write_params(prepared.root, raw))
    train_extractor(
        load_processed(paths.processed_dir(p.root, "digits")),
        p.extractor,
        p.seed,
        paths.extractor_path(p.root, "digits"),
        "digits",
    )
    train(p, "tiny", progress=False)
    train(p, "cond", progress=False)
    return p


def test_sample_writes_every_figure_and_logs_them(trained_two):
    import mlflow

    root = trained_two.root
    result = CliRunner().invoke(app, ["sample", "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    grid = 4 * 18 + 2  # 16 samples of 16x16, 4 per row, 2 px padding
    for name, classes in (("tiny", False), ("cond", True)):
        out = paths.samples_dir(root, name)
        assert Image.open(out / "grid.png").size == (grid, grid)
        assert Image.open(out / "interpolation.png").size == (4 * 18 + 2, 2 * 18 + 2)
        assert Image.open(out / "nice.png").size == (grid, grid)
        assert (out / "classes.png").exists() == classes
        if classes:  # 10 digits, one row of 8 each
            assert Image.open(out / "classes.png").size == (8 * 18 + 2, 10 * 18 + 2)
        filters = Image.open(out / "d_filters.png")  # ndf=4 filters of 4x4 shown at 24x24: 2 x 2
        assert filters.size == (2 * 26 + 2, 2 * 26 + 2) and filters.getextrema() != ((255, 255),) * 3
        described = json.loads((out / "figures.json").read_text())
        epochs = [1, 2] if name == "tiny" else [1]
        assert described["progression_epochs"] == epochs
        prog = Image.open(out / "progression.png")  # the 16-sample training grids (8 per row) side by side
        assert prog.size == (len(epochs) * (8 * 18 + 2 + GAP) + GAP, TITLE_H + 2 * 18 + 2 + 2 * GAP)
        arith = Image.open(out / "arithmetic.png")
        assert arith.width > 0 and arith.height > 0
        a = described["arithmetic"]
        assert a["mode"] == ("style" if classes else "class") and a["mean_of"] == 3 and a["pool"] == 200
        if "skipped" not in a:  # an untrained generator may not draw two classes: then the reason is given
            assert len(a["rows"]) == 2 and arith.width >= 4 * 64 and arith.height >= TITLE_H + 2 * 64
        assert not list(paths.report_dir(root, name).glob("samples"))  # the old location is gone

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    run_id = json.loads((paths.state_dir(root, "cond") / "mlflow_run.json").read_text())["run_id"]
    logged = {f.path.split("/")[-1] for f in mlflow.MlflowClient().list_artifacts(run_id, "samples")}
    assert {"grid.png", "nice.png", "classes.png", "arithmetic.png", "progression.png", "d_filters.png"} <= logged


# ---------------------------------------------------------------- latent arithmetic
class LinearG(nn.Module):
    """A generator whose images are flat at tanh(z[0]): kind = a bucket of z[0], linear in z."""

    def forward(self, z, labels=None):
        return torch.tanh(z[:, :1, None, None]).expand(-1, 1, 8, 8)


class BucketClassifier(nn.Module):
    """A 'domain classifier' with the DomainNet interface: class k if the mean pixel is near centre k."""

    def __init__(self, centres):
        super().__init__()
        self.encoder = nn.Flatten()
        self.centres = torch.tensor(centres)

    def head(self, h):
        return -100 * (h.mean(1, keepdim=True) - self.centres[None]) ** 2


def test_rows_by_class_takes_confident_latents_of_the_right_classes():
    z = torch.arange(40.0)[:, None].repeat(1, 3)
    pred = torch.tensor([0, 1, 2, 3] * 10)  # class 3 gets too few samples once it is cut below
    pred[pred == 3] = torch.tensor([3, 3, 3, 3, 3, 0, 0, 0, 0, 0])
    prob = torch.linspace(0.1, 1.0, 40)
    rows, problem = _rows_by_class(z, pred, prob, 3, 5, ["a", "b", "c", "d"])
    assert problem is None and len(rows) == 3  # classes 0, 1, 2 have >= 6 members; 3 has 5
    for r, row in enumerate(rows):
        a, b = (r + 1) % 3, r
        for key, cls in (("A", a), ("B", b), ("C", b)):
            idx = row[key][:, 0].long()
            assert (pred[idx] == cls).all(), (r, key)
        assert set(row["B"][:, 0].tolist()).isdisjoint(row["C"][:, 0].tolist())
        assert prob[row["B"][:, 0].long()].min() >= prob[row["C"][:, 0].long()].max()  # B = most confident
        assert row["expected"] == a


def _arith(pool: int, mean_of: int, rows: int) -> SampleParams:
    return SampleParams(arithmetic_pool=pool, arithmetic_mean_of=mean_of, arithmetic_rows=rows)


def test_arithmetic_with_a_classifier_on_a_linear_generator_gets_every_analogy_right():
    net = BucketClassifier([-0.8, 0.0, 0.8])
    image, info = latent_arithmetic(
        LinearG(), 4, "normal", 0, net, ["lo", "mid", "hi"], _arith(600, 3, 3), torch.Generator().manual_seed(0)
    )
    assert info["mode"] == "class" and len(info["rows"]) == 3
    assert info["agreement"] == 1.0 and all(r["got"] == r["expected"] for r in info["rows"])
    assert image.width >= 4 * 64 and image.height == TITLE_H + 3 * (64 + GAP) + GAP


def test_arithmetic_without_labels_uses_brightness_and_says_so():
    image, info = latent_arithmetic(
        LinearG(), 4, "normal", 0, None, [], _arith(60, 3, 2), torch.Generator().manual_seed(0)
    )
    assert info["mode"] == "brightness" and "brightness" in info["note"] and len(info["rows"]) == 2
    assert all(r["value_result"] > r["value_C"] for r in info["rows"]) and info["agreement"] == 1.0


def test_arithmetic_skips_with_the_reason_when_one_class_dominates():
    net = BucketClassifier([0.0, 50.0])  # every image (pixels in [-1, 1]) is nearest 0: one class only
    image, info = latent_arithmetic(
        LinearG(), 4, "normal", 0, net, ["x", "y"], _arith(30, 3, 2), torch.Generator().manual_seed(0)
    )
    assert "the arithmetic needs two" in info["skipped"] and info["rows"] == [] and image.width > 0


# ---------------------------------------------------------------- progression
def test_closest_epochs_picks_the_nearest_saved_and_the_last():
    assert closest_epochs([1, 2, 3, 4, 6, 9, 12, 30]) == [1, 4, 9, 12, 30]  # 5: tie 4/6 -> 4
    assert closest_epochs([2]) == [2]
    assert closest_epochs([]) == []
    assert closest_epochs(list(range(1, 101))) == [1, 5, 10, 20, 100]


def test_progression_places_the_chosen_grids_side_by_side(tmp_path):
    grids = tmp_path / "grids"
    grids.mkdir()
    for e in (3, 6, 9, 12, 15, 18, 21, 24):
        Image.new("RGB", (60, 20), (e * 10, 0, 0)).save(grids / f"epoch_{e:04d}.png")
    (grids / "notes.txt").write_text("ignored")
    image, epochs = progression(grids)
    assert epochs == [3, 6, 9, 21, 24]  # 1->3, 5->6, 10->9, 20->21, last 24
    assert image.size == (5 * (60 + GAP) + GAP, TITLE_H + 20 + 2 * GAP)
    # the third cell is epoch 9's grid
    x = GAP + 2 * (60 + GAP) + 5
    assert image.getpixel((x, TITLE_H + GAP + 5)) == (90, 0, 0)
    _, none = progression(tmp_path / "missing")
    assert none == []


# ---------------------------------------------------------------- discriminator filters
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_filter_grid_for_every_variant(variant):
    size = 16
    channels = 1 if variant in ("cgan", "upsample-gan") else 3
    e = ExperimentParams(variant=variant, ngf=4, ndf=4, z_dim=8)
    _, D = build_networks(e, channels, size, 10 if VARIANTS[variant].conditional else 0)
    w = next(m for m in D.modules() if isinstance(m, nn.Conv2d)).weight
    n, k = w.shape[0], w.shape[-1]
    tile = k * math.ceil(24 / k)
    per_row = math.ceil(math.sqrt(n))
    image = filter_grid(D)
    assert image.size == (per_row * (tile + 2) + 2, math.ceil(n / per_row) * (tile + 2) + 2)
    inner = image.crop((2, 2, 2 + tile, 2 + tile))  # the first filter, normalised: spans black..white
    lo, hi = zip(*inner.getextrema())
    assert min(lo) == 0 and max(hi) == 255
