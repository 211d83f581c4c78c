"""score: any images, measured with exactly the metrics `evaluate` uses.

`dcganlab score DATASET IMAGES` is how samples from another implementation (the classic
pytorch/examples script, a paper's released samples) are compared fairly with ours: the same
domain extractor, the same held-out reference images (`evaluate.num_samples` of them, drawn with
the same seed), the same sample count and k (evaluate.image_metrics). IMAGES is
- a folder of PNG/JPEG files (its top level, by name);
- a `.npy` / `.npz` uint8 array (N, H, W) or (N, H, W, C) (an .npz: `arr_0`, or its only array);
- an MLflow model URI (`runs:/...`, `models:/...`) of a logged dcganlab generator: it draws from
  the same latents `evaluate` uses, so our own model scores exactly as in reports/eval/.
More than `evaluate.num_samples` images: a seeded random subset of that many (released samples
are often sorted by class); fewer, or the wrong size or channels: a one-line error and nothing
written. Generated images are not classified by label, so class accuracy, the linear probe and
fid_ranked (which need G or D) are `evaluate`'s alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dcganlab.core.config import Params
from dcganlab.core.errors import UserError
from dcganlab.core.files import Unreadable, load_npy
from dcganlab.evaluation.calibration import read_headline
from dcganlab.evaluation.extractor import to_float
from dcganlab.evaluation.reference import image_metrics, load_reference

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNELS_OF_MODE = {"L": 1, "RGB": 3}
MODEL_SCHEMES = ("runs:/", "models:/")


# ---------------------------------------------------------------- reading images
def _read_image(path: Path) -> np.ndarray:
    """(H, W, C) uint8 of a gray or RGB image file, as stored (no conversion: wrong channels are an error)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img)
    except Exception:  # noqa: BLE001 - a damaged file can make a decoder raise anything
        raise Unreadable(path, "image", "truncated, or not an image", "replace or remove it") from None
    if mode not in CHANNELS_OF_MODE:
        raise UserError(f"{path}: image mode {mode}; score reads 8-bit gray (L) or RGB images")
    return array.reshape(*array.shape[:2], CHANNELS_OF_MODE[mode])


def read_folder(folder: Path) -> np.ndarray:
    """(N, H, W, C) uint8 of the PNG/JPEG files at the top of `folder`, by name."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no PNG or JPEG files in {folder}")
    images = [_read_image(p) for p in files]
    first = images[0].shape
    for p, image in zip(files, images):
        if image.shape != first:
            raise UserError(
                f"{p}: {_shape(image.shape)}, but {files[0].name} is {_shape(first)}; "
                f"all images must have one size and channel count"
            )
    return np.stack(images)


def read_array(path: Path) -> np.ndarray:
    """(N, H, W, C) uint8 from a .npy, or an .npz's `arr_0` (numpy.savez's name) or only array."""
    loaded = load_npy(path, "image array", "give a .npy/.npz of uint8 images (N, H, W) or (N, H, W, C)")
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            name = "arr_0" if "arr_0" in names else (names[0] if len(names) == 1 else None)
            if name is None:
                raise UserError(f"{path}: arrays {', '.join(names) or 'none'}; score reads `arr_0` or a single array")
            loaded = loaded[name]
    if loaded.dtype != np.uint8:
        raise UserError(f"{path}: dtype {loaded.dtype}; score reads uint8 images (0..255)")
    if loaded.ndim == 3:
        loaded = loaded[..., None]
    if loaded.ndim != 4:
        raise UserError(f"{path}: shape {loaded.shape}; score reads (N, H, W) or (N, H, W, C) images")
    return loaded


def _shape(hwc: tuple) -> str:
    return f"{hwc[0]}x{hwc[1]} with {hwc[2]} channel(s)"


def check_images(nhwc: np.ndarray, source: str, channels: int, size: int, num: int) -> None:
    """The dataset's size and channels, and at least the number of images `evaluate` uses."""
    if nhwc.shape[1:] != (size, size, channels):
        raise UserError(
            f"{source}: images are {_shape(nhwc.shape[1:])}; the dataset's are "
            f"{_shape((size, size, channels))} (resize them the way the dataset was prepared)"
        )
    if len(nhwc) < num:
        raise UserError(
            f"{source}: {len(nhwc)} images; evaluate uses evaluate.num_samples = {num}, give at least that many"
        )


def choose(nhwc: np.ndarray, num: int, seed: int) -> torch.Tensor:
    """`num` of the images in [-1, 1], (N, C, H, W): all of them, or a seeded random subset."""
    if len(nhwc) > num:
        nhwc = nhwc[np.sort(np.random.default_rng(seed).choice(len(nhwc), num, replace=False))]
    return to_float(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------- MLflow models
def model_images(params: Params, uri: str, num: int, classes: list[str], gen: torch.Generator) -> torch.Tensor:
    """`num` images from a logged generator, from the latents (and balanced labels) `evaluate`
    draws after the reference images: for our own model, the same images as `evaluate`."""
    from dcganlab.core.tracking import connect
    from dcganlab.gan.sampling import balanced_labels, sample_noise

    mlflow = connect(params)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - unknown run/model, not a pyfunc model, store errors
        raise UserError(
            f"cannot load MLflow model {uri}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    inputs = {spec.name: spec for spec in model.metadata.get_input_schema().inputs}
    if "z" not in inputs:
        raise UserError(f"{uri} is not a dcganlab generator (its input has no latent tensor 'z')")
    z_dim = int(inputs["z"].shape[-1])
    run_id = model.metadata.run_id
    noise = mlflow.MlflowClient().get_run(run_id).data.params.get("experiment.noise", "normal") if run_id else "normal"
    z = sample_noise(num, z_dim, noise, "cpu", gen)
    labels = balanced_labels(num, len(classes)) if "labels" in inputs else None
    step = int((model.model_config or {}).get("max_latents", 256))  # the model's per-call cap
    out = []
    for i in range(0, num, step):
        batch = {"z": z[i : i + step].numpy()}
        if labels is not None:
            batch["labels"] = labels[i : i + step].numpy()
        out.append(torch.as_tensor(np.asarray(model.predict(batch if labels is not None else batch["z"]))))
    return torch.cat(out)


def _check_generated(fake: torch.Tensor, uri: str, channels: int, size: int) -> None:
    if tuple(fake.shape[1:]) != (channels, size, size):
        raise UserError(
            f"{uri}: generates {tuple(fake.shape[1:])} images (C, H, W); the dataset's are {(channels, size, size)}"
        )


# ---------------------------------------------------------------- the command
def run(params: Params, dataset: str, source: str) -> dict:
    """The metrics of `source`'s images against `dataset`'s held-out real images, with how they
    were computed and the calibration's headline. Everything is checked before anything is computed."""
    ds, num = params.dataset(dataset), params.evaluate.num_samples
    gen = torch.Generator().manual_seed(params.seed + 200)  # evaluate's: the same reference images
    if source.startswith(MODEL_SCHEMES):
        ref = load_reference(params, dataset, gen)
        fake = model_images(params, source, num, ref.data["stats"]["classes"], gen)
        _check_generated(fake, source, ds.channels, ds.image_size)
    else:
        path = Path(source)
        if not path.exists():
            raise UserError(
                f"{source}: no such folder or file (give a folder of PNG/JPEG, a .npy/.npz, or runs:/ models:/)"
            )
        nhwc = read_folder(path) if path.is_dir() else read_array(path)
        check_images(nhwc, source, ds.channels, ds.image_size, num)
        fake = choose(nhwc, num, params.seed + 202)
        ref = load_reference(params, dataset, gen)
    return {
        "images": source,
        "dataset": dataset,
        "seed": params.seed,
        **image_metrics(params, dataset, ref, fake),
        "calibration": read_headline(params.root, dataset),
    }
