"""Decode any common image file into an RGB uint8 array, or say why not.

Handles EXIF orientation, 16-bit and float images, palette/alpha (composited on white),
CMYK, grayscale, animated files (first frame), and refuses decompression bombs from the
header alone, before any pixel is decoded. Every failure is a `Skip` with a status
(the category counted in stats.json) and a one-line reason; nothing else escapes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# statuses of files that cannot be used, whatever the settings
EMPTY, NOT_AN_IMAGE, TRUNCATED, UNREADABLE, TOO_LARGE = "empty", "not_an_image", "truncated", "unreadable", "too_large"
ORIENTATION = 0x0112
# EXIF orientation -> numpy ops that make the pixels upright (the same as ImageOps.exif_transpose)
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


class Skip(Exception):
    """An input that is skipped, with its manifest status and reason."""

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        peak = a.max(initial=0)
        if mode.startswith("I;16") or peak > 255:
            top = 65535.0
        else:  # float images usually hold 0..1; 8-bit values stored wide hold 0..255
            top = 1.0 if mode == "F" and peak <= 1.0 else 255.0
        gray = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "P", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def _rawmode(img: Image.Image) -> str:
    """How the file stores its pixels, e.g. 'RGB;16B' (read before load(), which clears tile)."""
    if not img.tile:
        return ""
    args = img.tile[0].args if hasattr(img.tile[0], "args") else img.tile[0][3]
    return str(args[0] if isinstance(args, tuple) and args else args)


def _deep_colour(path: Path, orientation: int) -> np.ndarray | None:
    """16-bit colour (PNG/TIFF): Pillow keeps only the high byte; OpenCV reads all 16 bits,
    so 8-bit values are rounded, the same as for 16-bit gray. None if OpenCV cannot."""
    arr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)  # ignores EXIF orientation
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        return None
    a = arr.astype(np.float64) / 65535.0
    rgb = a[:, :, 2::-1]
    if arr.shape[2] == 4:  # composite on white, as for 8-bit alpha
        alpha = a[:, :, 3:4]
        rgb = rgb * alpha + (1.0 - alpha)
    out = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    turn = _UPRIGHT.get(orientation)
    return np.ascontiguousarray(turn(out) if turn else out)


def _why(exc: Exception) -> Skip:
    msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if isinstance(exc, UnidentifiedImageError):
        return Skip(NOT_AN_IMAGE, "not a recognised image format")
    if isinstance(exc, (OSError, SyntaxError, EOFError)) and any(
        s in msg.lower() for s in ("truncated", "end of file", "broken data stream", "unexpected end")
    ):
        return Skip(TRUNCATED, msg)
    if isinstance(exc, Image.DecompressionBombError):
        return Skip(TOO_LARGE, msg)
    return Skip(UNREADABLE, f"{type(exc).__name__}: {msg}")


def load_rgb(path: Path, max_pixels: int = 50_000_000) -> np.ndarray:
    """H x W x 3 uint8, upright; raises Skip(status, reason) and nothing else."""
    try:
        if path.stat().st_size == 0:
            raise Skip(EMPTY, "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning, corrupt EXIF: handled here
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as img:
                    w, h = img.size
                    if w * h > max_pixels:
                        raise Skip(TOO_LARGE, f"{w}x{h} pixels exceeds max_pixels={max_pixels}")
                    if img.mode in ("RGB", "RGBA", "LA") and ";16" in _rawmode(img):
                        deep = _deep_colour(path, img.getexif().get(ORIENTATION, 1))
                        if deep is not None:
                            return deep
                    img.seek(0)  # animated: first frame
                    img.load()
                    img = ImageOps.exif_transpose(img)
                    return _to_rgb(img)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Skip:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile file can make a decoder raise anything
        raise _why(exc) from None
