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

from dcganlab.errors import ParamsError

SOURCES = ("mnist-subset", "lfw-subset", "mnist", "fashion-mnist", "cifar10", "stl10", "celeba", "folder")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # also keeps names from leaving their folders
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")
# splits each download source knows (torchvision's names); other sources ignore `split`
SPLITS = {"mnist": ("train", "test"), "fashion-mnist": ("train", "test"), "cifar10": ("train", "test"),
          "stl10": ("train", "test", "unlabeled", "train+unlabeled"), "celeba": ("train", "valid", "test", "all")}
# experiment names that are folders of models/ or reports/ themselves
RESERVED_EXPERIMENTS = {"extractors", "eval", "quality", "samples", "figures"}


@dataclass
class DatasetParams:
    source: str = "mnist-subset"
    path: str = ""               # folder: a directory of images (searched recursively); download sources: a folder
                                 # with the dataset's official files (checked, used instead of a download)
    split: str = "train"         # torchvision sources: which split to fetch
    limit: int = 0               # keep at most this many raw images (0 = all)
    detect_faces: bool = False   # Haar frontal-face detection + square crop
    image_size: int = 32
    channels: int = 1
    margin: float = 0.25         # extra context around the detected face, fraction of its side
    min_face_size: int = 24      # Haar minSize, pixels of the (decoded) input image
    scale_factor: float = 1.1    # Haar scaleFactor
    min_neighbors: int = 3       # Haar minNeighbors
    max_pixels: int = 50_000_000  # larger images are skipped as decompression bombs
    test_fraction: float = 0.1   # held-out real images (evaluation reference split)
    workers: int = 1             # processes for prepare


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
    momentum: float = 0.9        # SGD variants (upsample-gan): Nesterov momentum
    real_label: float = 1.0      # target for real images in D's loss (0.9 = label smoothing)
    fake_label: float = 0.0      # target for generated images in D's loss (0.1 = label smoothing)
    noise: str = "normal"        # normal | uniform (in [-1, 1])
    feature_matching: float = 0.0  # weight of the feature-matching term in G's loss
    lr_decay: float = 1.0        # both learning rates are multiplied by this after every epoch
    flip_p: float = 0.0          # probability of a horizontal flip of each real image
    smooth_sigma: float = 1.0    # cartoon-128: sigma of the Gaussian filter on G's output
    seed_offset: int = 0         # added to `seed` (replicates of one recipe)


@dataclass
class TrainParams:
    device: str = "auto"         # auto | cpu | cuda | cuda:N
    grid_size: int = 64          # fixed-noise samples in each epoch's grid
    log_model: bool = True       # log the final generator as an MLflow model
    serve_max_latents: int = 256  # latents per request the logged model takes (the reply: ~22 KB of JSON per 32x32 digit)
    checkpoint_every_steps: int = 0  # also checkpoint every N (global) steps, for mid-epoch resume (0 = epoch ends only)
    collapse_real: float = 0.99  # discriminator collapse: D(x) above this ...
    collapse_fake: float = 0.01  # ... and D(G(z)) below this ...
    collapse_steps: int = 100    # ... for this many consecutive steps is flagged (0 = never)
    amp: str = "auto"            # mixed precision: auto (bf16 on CUDA and on CPUs with native bf16, else off) | off | bf16 | fp16 (+ GradScaler)
    channels_last: str = "auto"  # memory format: auto (on for CUDA and with CPU bf16) | on | off
    compile: bool = False        # torch.compile the networks for the training step


@dataclass
class SampleParams:
    num: int = 64
    interpolation_pairs: int = 8
    interpolation_steps: int = 8
    arithmetic_rows: int = 4     # rows (analogies) in arithmetic.png
    arithmetic_pool: int = 1000  # latents drawn (and classified) to find samples of each kind
    arithmetic_mean_of: int = 3  # latents averaged per kind (the DCGAN paper averages 3)


@dataclass
class ExtractorParams:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    features: int = 128


@dataclass
class EvaluateParams:
    num_samples: int = 1000
    kid_subset_size: int = 100
    batch_size: int = 250
    pr_k: int = 3                # precision/recall: k of the k-NN manifold radius
    ssim_pairs: int = 500        # diversity: random pairs for mean pairwise SSIM
    probe_train_n: int = 2000    # linear probe: at most this many real training images
    nice_factor: int = 5         # fid_ranked: keep the D-best n of nice_factor * n samples
    inception: str = "auto"      # auto (use the InceptionV3 weights if present or downloadable) | off
    inception_weights: str = "models/extractors/inception/weights-inception-2015-12-05-6726825d.pth"
    inception_url: str = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                          "weights-inception-2015-12-05-6726825d.pth")  # "" = never download
    curve_samples: int = 250     # quality stage: generated and real images per saved epoch
    inception_samples: int = 500  # inception FID/KID: at most this many generated and real images (slow on a CPU)


@dataclass
class TrackingParams:
    uri: str = ""                # "" = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the project


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
            raise ParamsError(f"unknown experiment '{name}' (params.yaml has: {', '.join(self.experiments) or 'none'})")
        return self.experiments[name]

    def dataset(self, name: str) -> DatasetParams:
        if name not in self.datasets:
            raise ParamsError(f"unknown dataset '{name}' (params.yaml has: {', '.join(self.datasets) or 'none'})")
        return self.datasets[name]


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
            errors.append(f"{where}: must be a finite number, got {value!r}")
            return None
    elif typ is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    errors.append(f"{where}: expected {typ.__name__}, got {value!r}")
    return None


def _build(cls: type, raw: Any, where: str, errors: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{where.lstrip('.') or 'the top level'}: expected a mapping, got {raw!r}"[:200])
        return cls()
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name != "root"}
    for key in raw:
        if key not in known:
            errors.append(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})".lstrip("."))
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
            kwargs[key] = {str(k): _build(item_cls, v, f"{key}.{k}", errors) for k, v in value.items()}
        else:
            kwargs[key] = _coerce(raw[key], typ, f"{where}.{key}".lstrip("."), errors)
    return cls(**{k: v for k, v in kwargs.items() if v is not None})


def _check_ranges(p: Params, errors: list[str]) -> None:
    from dcganlab.variants import VARIANTS  # variants import models; keep config import-light

    def need(cond: bool, msg: str) -> None:
        if not cond:
            errors.append(msg)

    for name, d in p.datasets.items():
        w = f"datasets.{name}"
        need(bool(NAME_RE.match(name)), f"{w}: name may hold only letters, digits, '-' and '_'")
        need(d.source in SOURCES, f"{w}.source: unknown source '{d.source}' (known: {', '.join(SOURCES)})")
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
    for name, e in p.experiments.items():
        w = f"experiments.{name}"
        need(bool(NAME_RE.match(name)), f"{w}: name may hold only letters, digits, '-' and '_'")
        need(e.dataset in p.datasets, f"{w}.dataset: unknown dataset '{e.dataset}' (params.yaml has: {', '.join(p.datasets)})")
        if e.variant not in VARIANTS:
            errors.append(f"{w}.variant: unknown variant '{e.variant}' (known: {', '.join(VARIANTS)})")
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
        need(e.smooth_sigma > 0.0, f"{w}.smooth_sigma: must be > 0")
    folded = [n.lower() for n in p.experiments]
    need(len(set(folded)) == len(folded), "experiments: two names differ only in case (their folders would clash)")
    for name in p.experiments:
        need(name.lower() not in RESERVED_EXPERIMENTS,
             f"experiments.{name}: name is reserved (it is a folder of models/ or reports/: "
             f"{', '.join(sorted(RESERVED_EXPERIMENTS))})")
    for name, d in p.datasets.items():
        splits = SPLITS.get(d.source)
        need(splits is None or d.split in splits,
             f"datasets.{name}.split: '{d.split}' is not a split of {d.source} (known: {', '.join(splits or ())})")
    need(0 <= p.seed <= 2**32 - 1, "seed: must be in 0..4294967295")
    for name, e in p.experiments.items():
        need(e.seed_offset >= 0, f"experiments.{name}.seed_offset: must be >= 0")
    need(bool(DEVICE_RE.match(p.train.device)), f"train.device: '{p.train.device}' is not auto, cpu, mps, cuda or cuda:N")
    need(p.sample.interpolation_pairs >= 1, "sample.interpolation_pairs: must be >= 1")
    need(p.evaluate.batch_size >= 1, "evaluate.batch_size: must be >= 1")
    need(p.extractor.batch_size >= 2, "extractor.batch_size: must be >= 2")
    need(p.extractor.features >= 1, "extractor.features: must be >= 1")
    need(p.train.grid_size >= 1, "train.grid_size: must be >= 1")
    need(p.train.checkpoint_every_steps >= 0, "train.checkpoint_every_steps: must be >= 0")
    # the served model's reply grows with it (4096 32x32 digits: ~90 MB of JSON) and so does its body limit
    need(1 <= p.train.serve_max_latents <= 4096, "train.serve_max_latents: must be in 1..4096")
    need(0.0 <= p.train.collapse_real <= 1.0 and 0.0 <= p.train.collapse_fake <= 1.0,
         "train.collapse_real/collapse_fake: must be in [0, 1]")
    need(p.train.collapse_steps >= 0, "train.collapse_steps: must be >= 0")
    need(p.train.amp in ("auto", "off", "bf16", "fp16"), "train.amp: must be auto, off, bf16 or fp16")
    need(p.train.channels_last in ("auto", "on", "off"), "train.channels_last: must be auto, on or off")
    need(p.sample.num >= 1, "sample.num: must be >= 1")
    need(p.sample.interpolation_steps >= 2, "sample.interpolation_steps: must be >= 2")
    need(p.sample.arithmetic_rows >= 1, "sample.arithmetic_rows: must be >= 1")
    need(p.sample.arithmetic_mean_of >= 1, "sample.arithmetic_mean_of: must be >= 1")
    need(p.sample.arithmetic_pool >= 3 * p.sample.arithmetic_mean_of,
         "sample.arithmetic_pool: must be >= 3 x sample.arithmetic_mean_of")
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


def parse_params(raw: Any, root: Path = Path(".")) -> Params:
    params, errors = check_params(raw)
    if errors:
        raise ParamsError("invalid params: " + "; ".join(errors))
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
        raw = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ParamsError(f"invalid params: {path}: " + "; ".join(loader.duplicates)
                          + " (only the last value would be used)")
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
