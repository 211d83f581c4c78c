"""Decode any common image file into an RGB uint8 array, or say why not.

Handles EXIF orientation, 16-bit and float images, palette/alpha (composited on white),
CMYK, grayscale, animated files (first frame), and refuses decompression bombs from the
header alone, before any pixel is decoded.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


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
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        gray = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "P", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def load_rgb(path: Path, max_pixels: int = 50_000_000) -> np.ndarray:
    """H x W x 3 uint8, upright; raises Skip(status, reason)."""
    try:
        if path.stat().st_size == 0:
            raise Skip("unreadable", "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: we check size ourselves
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as img:
                    w, h = img.size
                    if w * h > max_pixels:
                        raise Skip("too_large", f"{w}x{h} pixels exceeds max_pixels={max_pixels}")
                    img.seek(0)  # animated: first frame
                    img.load()
                    img = ImageOps.exif_transpose(img)
                    return _to_rgb(img)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Skip:
        raise
    except UnidentifiedImageError:
        raise Skip("unreadable", "not a recognised image format") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Skip("unreadable", msg[:200]) from None
