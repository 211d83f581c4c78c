"""Face detection and cropping: the face-generation paper's OpenCV Haar-cascade method.

detect (frontal-face cascade) -> keep the largest face -> square crop with a margin,
kept inside the image -> resize -> 1 or 3 channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dcganlab.core.errors import UserError
from dcganlab.data.images import Skip, load_rgb

CASCADE_FILE = "haarcascade_frontalface_default.xml"
_cascade: cv2.CascadeClassifier | None = None


def cascade() -> cv2.CascadeClassifier:
    global _cascade
    if _cascade is None:
        path = Path(cv2.data.haarcascades) / CASCADE_FILE
        clf = cv2.CascadeClassifier(str(path))
        if clf.empty():
            raise UserError(f"OpenCV Haar cascade not found at {path} (opencv-python-headless < 5 ships it)")
        _cascade = clf
    return _cascade


@dataclass(frozen=True)
class CropSettings:
    image_size: int = 64
    channels: int = 3
    detect_faces: bool = True
    margin: float = 0.25
    min_face_size: int = 24
    scale_factor: float = 1.1
    min_neighbors: int = 3
    max_pixels: int = 50_000_000

    @classmethod
    def from_dataset(cls, ds) -> "CropSettings":
        return cls(**{k: getattr(ds, k) for k in cls.__dataclass_fields__})


def detect_largest_face(rgb: np.ndarray, s: CropSettings) -> tuple[int, int, int, int] | None:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    boxes = cascade().detectMultiScale(
        gray, scaleFactor=s.scale_factor, minNeighbors=s.min_neighbors, minSize=(s.min_face_size, s.min_face_size)
    )
    if len(boxes) == 0:
        return None
    x, y, w, h = max(boxes, key=lambda b: int(b[2]) * int(b[3]))
    return int(x), int(y), int(w), int(h)


def square_box(box: tuple[int, int, int, int], width: int, height: int, margin: float) -> tuple[int, int, int]:
    """(left, top, side) of a square around `box`, grown by `margin`, shifted/shrunk to fit."""
    x, y, w, h = box
    side = int(round(max(w, h) * (1.0 + margin)))
    side = max(1, min(side, width, height))
    cx, cy = x + w / 2.0, y + h / 2.0
    left = int(round(min(max(cx - side / 2.0, 0), width - side)))
    top = int(round(min(max(cy - side / 2.0, 0), height - side)))
    return left, top, side


def center_square(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return rgb[top : top + side, left : left + side]


def finish(rgb: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Square RGB crop -> C x size x size uint8."""
    interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_LINEAR
    out = cv2.resize(rgb, (size, size), interpolation=interp)
    if channels == 1:
        return cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[None]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def process_image(path: Path, s: CropSettings) -> tuple[np.ndarray | None, str, str]:
    """One file -> (C x H x W uint8 or None, status, reason). Never raises on bad images."""
    try:
        rgb = load_rgb(path, s.max_pixels)
    except Skip as skip:
        return None, skip.status, skip.reason
    h, w = rgb.shape[:2]
    if not s.detect_faces:
        return finish(center_square(rgb), s.image_size, s.channels), "kept", ""
    if min(h, w) < s.min_face_size:
        return None, "too_small", f"{w}x{h} is below min_face_size={s.min_face_size}"
    box = detect_largest_face(rgb, s)
    if box is None:
        return None, "no_face", "Haar cascade found no frontal face"
    left, top, side = square_box(box, w, h, s.margin)
    return (
        finish(rgb[top : top + side, left : left + side], s.image_size, s.channels),
        "kept",
        f"face {box[2]}x{box[3]}",
    )
