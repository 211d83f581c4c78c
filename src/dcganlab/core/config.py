"""params.yaml, loaded and validated in one place.

Every section is a dataclass; unknown keys, wrong types and out-of-range values are
collected and reported together as one `ParamsError` (exit code 2) before any work.
A misspelled key (`dvc exp run -S train.lerning_rate=...`) is an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from dcganlab.core.errors import ParamsError, quote

SOURCES = ("mnist-subset", "lfw-subset", "mnist", "fashion-mnist", "cifar10", "stl10", "celeba", "folder")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # also keeps names from leaving their folders
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")
# splits each download source knows (torchvision's names); other sources ignore `split`
SPLITS = {
    "mnist": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
    "celeba": ("train", "valid", "test", "all"),
}
# experiment names that are folders of models/ or reports/ themselves
RESERVED_EXPERIMENTS = {"extractors", "eval", "quality", "samples", "figures"}

# Upper bounds: far above every recipe here, low enough that a typo fails at once with one line
# rather than at allocation minutes later, or as a float32 overflow mid-run after the old
# checkpoint was set aside (`lr_g: 1e308` passed before). Why each number:
MAX_RATE = 10.0  # lr_g, lr_d, extractor.lr: a step 10x the weights' scale already diverges
# (float32 ends at 3.4e38)
MAX_WIDTH = 512  # ngf, ndf: at 128x128 the widest conv joins 16*512 and 8*512 channels: 5e8 weights,
# 2 GB of float32 (6 GB with Adam's two moments), the most one GPU holds comfortably
MAX_Z = 4096  # z_dim: G's first layer is z_dim x 16*ngf x 4 x 4 weights, 5e8 at ngf 512
MAX_BATCH = 65536  # every batch_size: 65536 images of 128x128 RGB are 13 GB of float32 input alone
MAX_EPOCHS = 100_000  # every epoch keeps a generator and a grid on disk: 100000 of each
MAX_THREADS = 1024  # train.threads: torch.set_num_threads; far above any CPU's cores
MAX_STEPS = 10**9  # step counts (checkpoint_every_steps, collapse_steps): no memory, but kept to int64 arithmetic
MAX_GRID = 1024  # train.grid_size, sample.num: images drawn in one pass into one PNG (nice.png draws 20x
# sample.num: 20480 images of 64x64 RGB float32 are 1 GB)
MAX_FIGURE = 64  # sample's interpolation pairs/steps and arithmetic rows: 64 x 64 images in one figure
MAX_MEAN_OF = 100  # sample.arithmetic_mean_of: latents averaged per kind (the paper averages 3)
MAX_POOL = 100_000  # sample.arithmetic_pool: latents generated and classified (100000 x 64x64 RGB float32: 5 GB)
MAX_EVAL = 50_000  # evaluate's image counts: FID's customary 50000; generated images are held at once
# (50000 x 64x64 RGB float32: 2.5 GB; nice_factor multiplies it)
MAX_NICE = 20  # evaluate.nice_factor: sample.py's nice.png uses 20
MAX_PR_K = 100  # precision/recall: k-NN radius, k far below any sample count
MAX_PAIRS = 1_000_000  # evaluate.ssim_pairs, probe_train_n: pairs and images handled one batch at a time
MAX_FEATURES = 4096  # extractor.features: one linear layer's width (Inception's is 2048)
MAX_WORK_SIZE = 1024  # extractor.work_size: the largest image side a dataset may have (image_size)
MAX_GRAY = 255.0  # extractor.black_level: gray levels of 255
MAX_FM = 1e6  # feature_matching weight: G's losses are O(1..100); x1e6 stays far inside float32
MAX_SIGMA = 100.0  # smooth_sigma: the 5x5 kernel is flat beyond ~5; 100 keeps sigma^2 finite in float32
MAX_WORKERS = 256  # prepare's processes: each holds a decoder and its images
MAX_FACE = 100_000  # min_face_size (pixels): larger than any image max_pixels allows
MAX_SCALE = 10.0  # Haar scale_factor: 10x between detection scales already misses most faces
MAX_NEIGHBORS = 1000  # Haar min_neighbors: more overlapping detections than a photo ever gives
MAX_PIXELS = 10**9  # max_pixels: an image this large decodes to 4 GB (RGBA); larger is a bomb, not a photo
MAX_ERRORS = 20  # invalid params: this many messages, then a count (one line, however broken the file)
MAX_EXPANSION = 100_000  # YAML nodes after aliases are expanded; an alias bomb is billions


@dataclass
class DatasetParams:
    source: str = "mnist-subset"
    path: str = ""  # folder: a directory of images (searched recursively); download sources: a folder
    # with the dataset's official files (checked, used instead of a download)
    split: str = "train"  # torchvision sources: which split to fetch
    limit: int = 0  # keep at most this many raw images (0 = all)
    detect_faces: bool = False  # Haar frontal-face detection + square crop
    image_size: int = 32
    channels: int = 1
    margin: float = 0.25  # extra context around the detected face, fraction of its side
    min_face_size: int = 24  # Haar minSize, pixels of the (decoded) input image
    scale_factor: float = 1.1  # Haar scaleFactor
    min_neighbors: int = 3  # Haar minNeighbors
    max_pixels: int = 50_000_000  # larger images are skipped as decompression bombs
    test_fraction: float = 0.1  # held-out real images (evaluation reference split)
    workers: int = 1  # processes for prepare


@dataclass
class ExperimentParams:
    variant: str = "dcgan"
    dataset: str = "digits"
    epochs: int = 10
    batch_size: int = 64
    z_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    momentum: float = 0.9  # SGD variants (upsample-gan): Nesterov momentum
    real_label: float = 1.0  # target for real images in D's loss (0.9 = label smoothing)
    fake_label: float = 0.0  # target for generated images in D's loss (0.1 = label smoothing)
    noise: str = "normal"  # normal | uniform (in [-1, 1])
    feature_matching: float = 0.0  # weight of the feature-matching term in G's loss
    lr_decay: float = 1.0  # both learning rates are multiplied by this after every epoch
    flip_p: float = 0.0  # probability of a horizontal flip of each real image
    label_flip: float = 0.0  # probability that each of D's targets is swapped, real for fake (noisy labels)
    smooth_sigma: float = 1.0  # cartoon-128: sigma of the Gaussian filter on G's output
    seed_offset: int = 0  # added to `seed` (replicates of one recipe)


@dataclass
class TrainParams:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    grid_size: int = 64  # fixed-noise samples in each epoch's grid
    log_model: bool = True  # log the final generator as an MLflow model
    serve_max_latents: int = (
        256  # latents per request the logged model takes (the reply: ~22 KB of JSON per 32x32 digit)
    )
    checkpoint_every_steps: int = (
        0  # also checkpoint every N (global) steps, for mid-epoch resume (0 = epoch ends only)
    )
    collapse_real: float = 0.99  # discriminator collapse: D(x) above this ...
    collapse_fake: float = 0.01  # ... and D(G(z)) below this ...
    collapse_steps: int = 100  # ... for this many consecutive steps is flagged (0 = never)
    amp: str = "auto"  # mixed precision: auto (bf16 on CUDA and on CPUs with native bf16, else off) | off | bf16 | fp16 (+ GradScaler)
    channels_last: str = "auto"  # memory format: auto (on for CUDA and with CPU bf16) | on | off
    compile: bool = False  # torch.compile the networks for the training step
    threads: int = 0  # every stage's CPU threads: 0 = its share of the cores (cpu_share.py) | N fixes it


@dataclass
class SampleParams:
    num: int = 64
    interpolation_pairs: int = 8
    interpolation_steps: int = 8
    arithmetic_rows: int = 4  # rows (analogies) in arithmetic.png
    arithmetic_pool: int = 1000  # latents drawn (and classified) to find samples of each kind
    arithmetic_mean_of: int = 3  # latents averaged per kind (the DCGAN paper averages 3)


@dataclass
class ExtractorParams:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    features: int = 128
    work_size: int = 64  # larger images are resized down to this side (antialiased) before the net; 0 = native
    black_level: float = (
        8.0  # from robust_from: gray levels (of 255) below this read as black (a faint pattern on black is no signal)
    )
    lr_schedule: str = "cosine"  # cosine (decay to 0 over the run: a stable last epoch) | constant
    robust_from: int = 33  # images of at least this side get the [1 2 1] low-pass and black_level (0: every size)


@dataclass
class EvaluateParams:
    num_samples: int = 1000
    kid_subset_size: int = 100
    batch_size: int = 250
    pr_k: int = 3  # precision/recall: k of the k-NN manifold radius
    ssim_pairs: int = 500  # diversity: random pairs for mean pairwise SSIM
    probe_train_n: int = 2000  # linear probe: at most this many real training images
    nice_factor: int = 5  # fid_ranked: keep the D-best n of nice_factor * n samples
    inception: str = "auto"  # auto (use the InceptionV3 weights if present or downloadable) | off
    inception_weights: str = "models/extractors/inception/weights-inception-2015-12-05-6726825d.pth"
    inception_url: str = (
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth"
    )  # "" = never download
    curve_samples: int = 250  # quality stage: generated and real images per saved epoch
    inception_samples: int = 500  # inception FID/KID: at most this many generated and real images (slow on a CPU)


@dataclass
class TrackingParams:
    uri: str = ""  # "" = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the project


@dataclass
class Params:
    seed: int = 0
    datasets: dict[str, DatasetParams] = field(default_factory=dict)
    experiments: dict[str, ExperimentParams] = field(default_factory=dict)
    train: TrainParams = field(default_factory=TrainParams)
    sample: SampleParams = field(default_factory=SampleParams)
    extractor: ExtractorParams = field(default_factory=ExtractorParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)
    root: Path = field(default=Path("."), repr=False)  # directory of params.yaml

    def experiment(self, name: str) -> ExperimentParams:
        if name not in self.experiments:
            raise ParamsError(f"unknown experiment {quote(name)} (params.yaml has: {listing(self.experiments)})")
        return self.experiments[name]

    def dataset(self, name: str) -> DatasetParams:
        if name not in self.datasets:
            raise ParamsError(f"unknown dataset {quote(name)} (params.yaml has: {listing(self.datasets)})")
        return self.datasets[name]


def label(name: Any) -> str:
    """A name or key as error messages show it: as is if short and printable, else quoted
    (a newline in a name must not split the one-line error; a 1 MB key must not fill it)."""
    text = str(name)
    return text if text.isprintable() and len(text) <= 80 else quote(name)


def listing(names: Any) -> str:
    """Names for a message: the first few, each as `label` shows it."""
    names = list(names)
    shown = ", ".join(label(n) for n in names[:10]) or "none"
    return shown + (f", ... ({len(names)} in all)" if len(names) > 10 else "")


def _coerce(value: Any, typ: type, where: str, errors: list[str]) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 2e-4 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if math.isfinite(number):
                return number
            errors.append(f"{where}: must be a finite number, got {quote(value)}")
            return None
    elif typ is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    errors.append(f"{where}: expected {typ.__name__}, got {quote(value)}")
    return None


def _build(cls: type, raw: Any, where: str, errors: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{where.lstrip('.') or 'the top level'}: expected a mapping, got {quote(raw)}")
        return cls()
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name != "root"}
    for key in raw:
        if key not in known:
            errors.append(f"{where}.{label(key)}: unknown key (known: {', '.join(sorted(known))})".lstrip("."))
    kwargs = {}
    for key in [k for k in raw if k in known]:  # params.yaml's order, not a set's (hash-seed dependent)
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, raw[key], f"{where}.{key}", errors)
        elif getattr(typ, "__origin__", None) is dict:
            item_cls = typ.__args__[1]
            value = raw[key] or {}
            if not isinstance(value, dict):
                errors.append(f"{where}.{key}: expected a mapping of name -> settings".lstrip("."))
                continue
            kwargs[key] = {str(k): _build(item_cls, v, f"{key}.{label(k)}", errors) for k, v in value.items()}
        else:
            kwargs[key] = _coerce(raw[key], typ, f"{where}.{key}".lstrip("."), errors)
    return cls(**{k: v for k, v in kwargs.items() if v is not None})


def _check_ranges(p: Params, errors: list[str]) -> None:
    from dcganlab.gan.variants import VARIANTS  # variants import models; keep config import-light

    def need(cond: bool, msg: str) -> None:
        if not cond:
            errors.append(msg)

    def most(value: float, limit: float, key: str) -> None:
        """The upper bound (a value under the lower bound has its own message)."""
        need(value <= limit, f"{key}: must be <= {limit if isinstance(limit, int) else f'{limit:g}'}")

    for name, d in p.datasets.items():
        w = f"datasets.{label(name)}"
        need(bool(NAME_RE.match(name)), f"{w}: name may hold only letters, digits, '-' and '_'")
        need(d.source in SOURCES, f"{w}.source: unknown source {quote(d.source)} (known: {', '.join(SOURCES)})")
        need(d.source != "folder" or bool(d.path), f"{w}.path: the folder source needs a path")
        need(d.image_size >= 8 and d.image_size <= 1024, f"{w}.image_size: must be in 8..1024")
        need(d.channels in (1, 3), f"{w}.channels: must be 1 or 3")
        need(d.limit >= 0, f"{w}.limit: must be >= 0")
        need(0.0 <= d.margin <= 2.0, f"{w}.margin: must be in 0..2")
        need(d.min_face_size >= 1, f"{w}.min_face_size: must be >= 1")
        need(d.scale_factor > 1.0, f"{w}.scale_factor: must be > 1")
        need(d.min_neighbors >= 0, f"{w}.min_neighbors: must be >= 0")
        need(d.max_pixels >= 1, f"{w}.max_pixels: must be >= 1")
        need(0.0 <= d.test_fraction < 1.0, f"{w}.test_fraction: must be in [0, 1)")
        need(d.workers >= 1, f"{w}.workers: must be >= 1")
        for key, limit in (
            ("min_face_size", MAX_FACE),
            ("scale_factor", MAX_SCALE),
            ("min_neighbors", MAX_NEIGHBORS),
            ("max_pixels", MAX_PIXELS),
            ("workers", MAX_WORKERS),
        ):
            most(getattr(d, key), limit, f"{w}.{key}")
    for name, e in p.experiments.items():
        w = f"experiments.{label(name)}"
        need(bool(NAME_RE.match(name)), f"{w}: name may hold only letters, digits, '-' and '_'")
        need(
            e.dataset in p.datasets,
            f"{w}.dataset: unknown dataset {quote(e.dataset)} (params.yaml has: {listing(p.datasets)})",
        )
        if e.variant not in VARIANTS:
            errors.append(f"{w}.variant: unknown variant {quote(e.variant)} (known: {', '.join(VARIANTS)})")
        elif e.dataset in p.datasets and 8 <= p.datasets[e.dataset].image_size <= 1024:  # else said above
            problem = VARIANTS[e.variant].check(e, p.datasets[e.dataset])
            need(problem is None, f"{w}: {problem}")
        need(e.epochs >= 1, f"{w}.epochs: must be >= 1")
        need(e.batch_size >= 2, f"{w}.batch_size: must be >= 2")
        need(e.z_dim >= 1, f"{w}.z_dim: must be >= 1")
        need(e.ngf >= 1 and e.ndf >= 1, f"{w}.ngf/ndf: must be >= 1")
        for key in ("lr_g", "lr_d"):
            val = getattr(e, key)
            need(math.isfinite(val) and val > 0, f"{w}.{key}: must be > 0")
        need(0.0 <= e.beta1 < 1.0 and 0.0 <= e.beta2 < 1.0, f"{w}.beta1/beta2: must be in [0, 1)")
        need(0.0 <= e.real_label <= 1.0 and 0.0 <= e.fake_label <= 1.0, f"{w}.real_label/fake_label: must be in [0, 1]")
        need(e.noise in ("normal", "uniform"), f"{w}.noise: must be 'normal' or 'uniform'")
        need(0.0 <= e.momentum < 1.0, f"{w}.momentum: must be in [0, 1)")
        need(e.feature_matching >= 0.0, f"{w}.feature_matching: must be >= 0")
        need(0.0 < e.lr_decay <= 1.0, f"{w}.lr_decay: must be in (0, 1]")
        need(0.0 <= e.flip_p <= 1.0, f"{w}.flip_p: must be in [0, 1]")
        need(0.0 <= e.label_flip <= 1.0, f"{w}.label_flip: must be in [0, 1]")
        need(e.smooth_sigma > 0.0, f"{w}.smooth_sigma: must be > 0")
        for key, limit in (
            ("epochs", MAX_EPOCHS),
            ("batch_size", MAX_BATCH),
            ("z_dim", MAX_Z),
            ("ngf", MAX_WIDTH),
            ("ndf", MAX_WIDTH),
            ("lr_g", MAX_RATE),
            ("lr_d", MAX_RATE),
            ("feature_matching", MAX_FM),
            ("smooth_sigma", MAX_SIGMA),
            ("seed_offset", 2**32 - 1),
        ):
            most(getattr(e, key), limit, f"{w}.{key}")
    folded = [n.lower() for n in p.experiments]
    need(len(set(folded)) == len(folded), "experiments: two names differ only in case (their folders would clash)")
    for name in p.experiments:
        need(
            name.lower() not in RESERVED_EXPERIMENTS,
            f"experiments.{label(name)}: name is reserved (it is a folder of models/ or reports/: "
            f"{', '.join(sorted(RESERVED_EXPERIMENTS))})",
        )
    for name, d in p.datasets.items():
        splits = SPLITS.get(d.source)
        need(
            splits is None or d.split in splits,
            f"datasets.{label(name)}.split: {quote(d.split)} is not a split of {d.source} (known: {', '.join(splits or ())})",
        )
    need(0 <= p.seed <= 2**32 - 1, "seed: must be in 0..4294967295")
    for name, e in p.experiments.items():
        need(e.seed_offset >= 0, f"experiments.{label(name)}.seed_offset: must be >= 0")
    need(
        bool(DEVICE_RE.match(p.train.device)),
        f"train.device: {quote(p.train.device)} is not auto, cpu, mps, cuda or cuda:N",
    )
    need(p.sample.interpolation_pairs >= 1, "sample.interpolation_pairs: must be >= 1")
    need(p.evaluate.batch_size >= 1, "evaluate.batch_size: must be >= 1")
    need(p.extractor.batch_size >= 2, "extractor.batch_size: must be >= 2")
    need(p.extractor.features >= 1, "extractor.features: must be >= 1")
    need(p.extractor.work_size == 0 or p.extractor.work_size >= 8, "extractor.work_size: must be 0 (native) or >= 8")
    need(p.extractor.black_level >= 0, "extractor.black_level: must be >= 0")
    need(
        p.extractor.lr_schedule in ("cosine", "constant"),
        f"extractor.lr_schedule: {quote(p.extractor.lr_schedule)} is not cosine or constant",
    )
    need(p.extractor.robust_from >= 0, "extractor.robust_from: must be >= 0 (0: every size)")
    need(p.train.grid_size >= 1, "train.grid_size: must be >= 1")
    need(p.train.checkpoint_every_steps >= 0, "train.checkpoint_every_steps: must be >= 0")
    # the served model's reply grows with it (4096 32x32 digits: ~90 MB of JSON) and so does its body limit
    need(1 <= p.train.serve_max_latents <= 4096, "train.serve_max_latents: must be in 1..4096")
    need(0 <= p.train.threads <= MAX_THREADS, f"train.threads: must be in 0..{MAX_THREADS} (0: the share of the cores)")
    need(
        0.0 <= p.train.collapse_real <= 1.0 and 0.0 <= p.train.collapse_fake <= 1.0,
        "train.collapse_real/collapse_fake: must be in [0, 1]",
    )
    need(p.train.collapse_steps >= 0, "train.collapse_steps: must be >= 0")
    need(p.train.amp in ("auto", "off", "bf16", "fp16"), "train.amp: must be auto, off, bf16 or fp16")
    need(p.train.channels_last in ("auto", "on", "off"), "train.channels_last: must be auto, on or off")
    need(p.sample.num >= 1, "sample.num: must be >= 1")
    need(p.sample.interpolation_steps >= 2, "sample.interpolation_steps: must be >= 2")
    need(p.sample.arithmetic_rows >= 1, "sample.arithmetic_rows: must be >= 1")
    need(p.sample.arithmetic_mean_of >= 1, "sample.arithmetic_mean_of: must be >= 1")
    need(
        p.sample.arithmetic_mean_of > MAX_MEAN_OF  # (that one has its own message below)
        or p.sample.arithmetic_pool >= 3 * p.sample.arithmetic_mean_of,
        "sample.arithmetic_pool: must be >= 3 x sample.arithmetic_mean_of",
    )
    need(p.evaluate.num_samples >= 2, "evaluate.num_samples: must be >= 2")
    need(p.evaluate.kid_subset_size >= 2, "evaluate.kid_subset_size: must be >= 2")
    need(p.evaluate.pr_k >= 1, "evaluate.pr_k: must be >= 1")
    need(p.evaluate.ssim_pairs >= 1, "evaluate.ssim_pairs: must be >= 1")
    need(p.evaluate.probe_train_n >= 2, "evaluate.probe_train_n: must be >= 2")
    need(p.evaluate.nice_factor >= 1, "evaluate.nice_factor: must be >= 1")
    need(p.evaluate.inception in ("auto", "off"), "evaluate.inception: must be 'auto' or 'off'")
    need(p.evaluate.curve_samples >= 2, "evaluate.curve_samples: must be >= 2")
    need(p.evaluate.inception_samples >= 2, "evaluate.inception_samples: must be >= 2")
    need(p.extractor.epochs >= 1, "extractor.epochs: must be >= 1")
    need(p.extractor.lr > 0, "extractor.lr: must be > 0")
    for section, key, limit in (
        ("train", "grid_size", MAX_GRID),
        ("train", "checkpoint_every_steps", MAX_STEPS),
        ("train", "collapse_steps", MAX_STEPS),
        ("sample", "num", MAX_GRID),
        ("sample", "interpolation_pairs", MAX_FIGURE),
        ("sample", "interpolation_steps", MAX_FIGURE),
        ("sample", "arithmetic_rows", MAX_FIGURE),
        ("sample", "arithmetic_pool", MAX_POOL),
        ("sample", "arithmetic_mean_of", MAX_MEAN_OF),
        ("extractor", "epochs", MAX_EPOCHS),
        ("extractor", "batch_size", MAX_BATCH),
        ("extractor", "lr", MAX_RATE),
        ("extractor", "features", MAX_FEATURES),
        ("extractor", "work_size", MAX_WORK_SIZE),
        ("extractor", "black_level", MAX_GRAY),
        ("extractor", "robust_from", MAX_WORK_SIZE),
        ("evaluate", "num_samples", MAX_EVAL),
        ("evaluate", "kid_subset_size", MAX_EVAL),
        ("evaluate", "batch_size", MAX_BATCH),
        ("evaluate", "pr_k", MAX_PR_K),
        ("evaluate", "ssim_pairs", MAX_PAIRS),
        ("evaluate", "probe_train_n", MAX_PAIRS),
        ("evaluate", "nice_factor", MAX_NICE),
        ("evaluate", "curve_samples", MAX_EVAL),
        ("evaluate", "inception_samples", MAX_EVAL),
    ):
        most(getattr(getattr(p, section), key), limit, f"{section}.{key}")


def parse_params(raw: Any, root: Path = Path(".")) -> Params:
    params, errors = check_params(raw)
    if errors:
        more = f"; ... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
        # one line whatever a message quotes (the variant checks name datasets as they are)
        text = "; ".join(errors[:MAX_ERRORS]).replace("\r", "\\r").replace("\n", "\\n")
        raise ParamsError("invalid params: " + text + more)
    params.root = root
    return params


def check_params(raw: Any) -> tuple[Params, list[str]]:
    """(params, every error found, one message each)."""
    errors: list[str] = []
    params = _build(Params, raw, "", errors)
    # a value of the wrong type fell back to its default, so the range checks add nothing for
    # it; they run anyway so that every error is listed at once. A broken `datasets` section
    # would make every experiment's dataset look unknown: skip that one knock-on check.
    broken_datasets = any(e.startswith("datasets:") for e in errors)
    _check_ranges(params, errors)
    if broken_datasets:
        errors = [e for e in errors if ".dataset: unknown dataset" not in e]
    return params, list(dict.fromkeys(errors))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that notes duplicate keys (PyYAML keeps the last one silently)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    self.duplicates.append(f"line {key_node.start_mark.line + 1}: duplicate key '{key}'")
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                pass
        return super().construct_mapping(node, deep=deep)


def _check_expansion(node: yaml.Node | None, path: Path) -> None:
    """Refuse a document whose aliases expand to more than MAX_EXPANSION nodes (or into
    themselves). PyYAML shares an aliased value instead of copying it, so an alias bomb (ten
    aliases of ten aliases of ...) loads small, then a billion-element value reaches the checks,
    a message or MLflow. Anchors and merge keys that reuse a section stay allowed."""
    sizes: dict[int, int | None] = {}  # node -> its expanded size; None while it is being counted

    def size(n: yaml.Node) -> int:
        if id(n) in sizes:
            if sizes[id(n)] is None:
                raise ParamsError(f"invalid params: {path}: line {n.start_mark.line + 1}: an alias refers to itself")
            return sizes[id(n)]
        sizes[id(n)] = None
        children = (
            [c for pair in n.value for c in pair]
            if isinstance(n, yaml.MappingNode)
            else n.value
            if isinstance(n, yaml.SequenceNode)
            else []
        )
        sizes[id(n)] = min(1 + sum(size(c) for c in children), MAX_EXPANSION + 1)  # (capped: stays a small int)
        return sizes[id(n)]

    if node is not None and size(node) > MAX_EXPANSION:
        raise ParamsError(
            f"invalid params: {path}: its YAML aliases expand to over {MAX_EXPANSION} values (an alias bomb?)"
        )


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        _check_expansion(node, path)
        raw = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:  # PyYAML composes and constructs recursively
        raise ParamsError(f"{path}: nested too deeply") from None
    except ValueError as exc:  # an int of over 4300 digits: Python's int() refuses it
        raise ParamsError(f"{path}: a value YAML cannot read ({str(exc).split(':')[0]})") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ParamsError(
            f"invalid params: {path}: " + "; ".join(loader.duplicates) + " (only the last value would be used)"
        )
    if raw is None:
        raise ParamsError(f"invalid params: {path} is empty")
    return parse_params(raw, path.resolve().parent)


def as_dict(obj: Any) -> dict:
    """Flat {dotted.key: value} view, for MLflow params and fingerprints."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        if f.name == "root":
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update({f"{f.name}.{k}": v for k, v in as_dict(value).items()})
        else:
            out[f.name] = value
    return out
