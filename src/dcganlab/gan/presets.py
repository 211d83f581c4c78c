"""The seed papers' full settings, as named presets.

A preset is one dataset entry and one experiment entry for params.yaml. `dcganlab preset NAME`
prints them as `-S` overrides, so one command runs a paper's setting on real data:

    dvc exp run $(dcganlab preset resnet-exp8)

(the preset's dataset must be downloadable, or for `folder` sources present at its path).
Each override is `++key=value`: Hydra's "add or override", so it works whether params.yaml
has the key yet or not, and two presets sharing a dataset can go on one command line. A
plain `-S key=value` after the preset changes any of its keys (DVC applies them in order).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

from dcganlab.core.config import DatasetParams, ExperimentParams


@dataclass(frozen=True)
class Preset:
    description: str
    dataset_name: str
    dataset: dict
    experiment: dict = field(default_factory=dict)

    def entries(self) -> tuple[DatasetParams, ExperimentParams]:
        return DatasetParams(**self.dataset), ExperimentParams(dataset=self.dataset_name, **self.experiment)


_CIFAR64 = {"source": "cifar10", "image_size": 64, "channels": 3}
_STL64 = {"source": "stl10", "split": "unlabeled", "image_size": 64, "channels": 3}
_CELEBA64 = {
    "source": "celeba",
    "split": "all",
    "detect_faces": True,
    "image_size": 64,
    "channels": 3,
    "min_face_size": 40,
}
_CARTOON128 = {"source": "folder", "path": "data/external/cartoon", "image_size": 128, "channels": 3}
_ANIME96 = {"source": "folder", "path": "data/external/anime", "image_size": 96, "channels": 3}
_MNIST32 = {"source": "mnist", "image_size": 32, "channels": 1}
_MNIST28 = {"source": "mnist", "image_size": 28, "channels": 1}
_FASHION28 = {"source": "fashion-mnist", "image_size": 28, "channels": 1}
_FASHION64 = {"source": "fashion-mnist", "image_size": 64, "channels": 1}
_FASHION96 = {"source": "fashion-mnist", "image_size": 96, "channels": 1}  # upscaled from 28x28
_FASHION128 = {"source": "fashion-mnist", "image_size": 128, "channels": 1}  # upscaled from 28x28

_DCGAN = {
    "variant": "dcgan",
    "epochs": 25,
    "batch_size": 128,
    "z_dim": 100,
    "ngf": 64,
    "ndf": 64,
    "lr_g": 2e-4,
    "lr_d": 2e-4,
    "beta1": 0.5,
}
_ANIME = {"epochs": 20, "batch_size": 64, "z_dim": 100, "ngf": 64, "ndf": 64, "beta1": 0.5}
_CARTOON = {
    "variant": "cartoon-128",
    "epochs": 50,
    "batch_size": 64,
    "z_dim": 100,
    "ngf": 64,
    "ndf": 64,
    "lr_g": 2e-4,
    "lr_d": 1e-4,
    "beta1": 0.5,
    "feature_matching": 1.0,
    "lr_decay": 0.97,
    "label_flip": 0.1,  # the paper's 10% label flips (D's real/fake targets swapped); no image flips
    "smooth_sigma": 1.0,
}
_UPSAMPLE = {
    "variant": "upsample-gan",
    "epochs": 30,
    "batch_size": 128,
    "z_dim": 100,
    "lr_g": 5e-4,
    "lr_d": 5e-4,
    "momentum": 0.9,
    "noise": "uniform",
}

PRESETS: dict[str, Preset] = {
    "dcgan-cifar10": Preset("Radford et al. DCGAN, CIFAR-10 at 64x64", "cifar10-64", _CIFAR64, _DCGAN),
    "dcgan-stl10": Preset("Radford et al. DCGAN, STL-10 (unlabeled split) at 64x64", "stl10-64", _STL64, _DCGAN),
    "face-dcgan-celeba": Preset(
        "face generation: Haar-cropped CelebA faces at 64x64, uniform noise, lr 3e-4, 100 epochs",
        "celeba-faces64",
        _CELEBA64,
        {
            "variant": "face-dcgan",
            "epochs": 100,
            "batch_size": 64,
            "z_dim": 100,
            "ngf": 64,
            "ndf": 64,
            "lr_g": 3e-4,
            "lr_d": 3e-4,
            "beta1": 0.5,
            "noise": "uniform",
        },
    ),
    "cartoon-128": Preset(
        "cartoon faces at 128x128: smoothing, feature matching, lr decay, 10% label flips (images in data/external/cartoon)",
        "cartoon128",
        _CARTOON128,
        _CARTOON,
    ),
    # the claim's ablation: the same networks (the DCGAN G that cartoon-128 wraps, the same D) and
    # settings, without the smoothing layer and feature matching
    "cartoon-128-ablation": Preset(
        "cartoon-128 without smoothing and feature matching: the same DCGAN networks and settings otherwise",
        "cartoon128",
        _CARTOON128,
        {**_CARTOON, "variant": "dcgan", "feature_matching": 0.0},
    ),
    "cgan-mnist": Preset(
        "conditional (AC-GAN) digits: MNIST at 32x32, G lr = 5 x D lr",
        "mnist32",
        _MNIST32,
        {
            "variant": "cgan",
            "epochs": 25,
            "batch_size": 64,
            "z_dim": 100,
            "ngf": 64,
            "ndf": 64,
            "lr_g": 1e-3,
            "lr_d": 2e-4,
            "beta1": 0.5,
        },
    ),
    # The improved-DCGAN paper's four experiments on anime faces (images in data/external/anime).
    "resnet-exp5": Preset(
        "exp5: plain DCGAN, lr D/G 2e-4/2e-4, no smoothing",
        "anime96",
        _ANIME96,
        {"variant": "dcgan", **_ANIME, "lr_d": 2e-4, "lr_g": 2e-4},
    ),
    "resnet-exp6": Preset(
        "exp6: DCGAN, lr D/G 0.0064/0.00128, no smoothing",
        "anime96",
        _ANIME96,
        {"variant": "dcgan", **_ANIME, "lr_d": 0.0064, "lr_g": 0.00128},
    ),
    "resnet-exp7": Preset(
        "exp7: exp6 repeated with another seed (run-to-run spread)",
        "anime96",
        _ANIME96,
        {"variant": "dcgan", **_ANIME, "lr_d": 0.0064, "lr_g": 0.00128, "seed_offset": 1},
    ),
    "resnet-exp8": Preset(
        "exp8: ResNet generator, lr D/G 0.0064/0.00128, label smoothing 0.9/0.1",
        "anime96",
        _ANIME96,
        {"variant": "resnet-dcgan", **_ANIME, "lr_d": 0.0064, "lr_g": 0.00128, "real_label": 0.9, "fake_label": 0.1},
    ),
    "upsample-mnist": Preset("Keras upsampling GAN, MNIST 28x28, SGD 5e-4 Nesterov", "mnist28", _MNIST28, _UPSAMPLE),
    "upsample-fashion": Preset("Keras upsampling GAN, Fashion-MNIST 28x28", "fashion28", _FASHION28, _UPSAMPLE),
    "dcgan-fashion64": Preset(
        "Radford et al. DCGAN recipe on Fashion-MNIST at 64x64 (real data needing no "
        "network: Debian's dataset-fashion-mnist)",
        "fashion64",
        _FASHION64,
        _DCGAN,
    ),
}

# Every preset's dataset, plus Fashion-MNIST upscaled to 96x96 and 128x128: `--dataset NAME` runs a
# preset's recipe on one of these instead (e.g. the improved-DCGAN experiments, or the cartoon
# recipe and its ablation, on real offline images).
DATASETS: dict[str, dict] = {
    **{p.dataset_name: p.dataset for p in PRESETS.values()},
    "fashion96": _FASHION96,
    "fashion128": _FASHION128,
}


# `$(dcganlab preset NAME)` hands each word to dvc as-is only if the shell neither splits it
# (whitespace) nor globs it (*?[]); Hydra would unquote or interpolate the rest of these.
_UNSAFE = re.compile(r"[\s*?\[\]'\"\\$]")
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*")  # Hydra reads these unquoted as strings ...
_KEYWORDS = {"true", "false", "null", "inf", "nan"}  # ... except these


def _value(key: str, v) -> str:
    """`v` as a Hydra override value that reads back as `v` and survives `$(...)` word splitting."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if _UNSAFE.search(v):
        raise ValueError(f"{key}={v!r}: whitespace, quotes, $ or glob characters cannot pass through $(...)")
    if _PLAIN.fullmatch(v) and v.lower() not in _KEYWORDS:
        return v
    return f"'{v}'"  # '', 'true', '2020', 'a:b': the shell leaves quotes from $(...) alone, Hydra unquotes


def overrides(name: str, epochs: int | None = None, dataset: str | None = None, path: str | None = None) -> list[str]:
    """`-S ++key=value` arguments that add (or overwrite) the preset's dataset and experiment in
    params.yaml; `epochs` shortens the run, `dataset` (a name in DATASETS) swaps the data (the
    experiment is then named `<preset>-<dataset>`), `path` is the folder of the dataset's files."""
    preset = PRESETS[name]
    if dataset is not None:
        preset = replace(preset, dataset_name=dataset, dataset=DATASETS[dataset])
        name = f"{name}-{dataset}"
    ds, e = preset.entries()
    if epochs is not None:
        e = replace(e, epochs=epochs)
    if path is not None:
        ds = replace(ds, path=path)
    keys = [(f"datasets.{preset.dataset_name}.{k}", v) for k, v in asdict(ds).items()]
    keys += [(f"experiments.{name}.{k}", v) for k, v in asdict(e).items()]
    return [part for key, v in keys for part in ("-S", f"++{key}={_value(key, v)}")]
