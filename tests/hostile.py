"""A folder of hostile and awkward image files, built from scratch (see test_hostile.py).

`build_hostile(root)` writes `root/photos/` (the input folder) and `root/outside.png`
(a target for a link that leaves the folder) and returns the folder. EXPECTED maps each
entry's path inside the folder to its status: (with face detection, without).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ORIENTATION = 0x0112
# the transpose that, undone by the EXIF orientation tag, gives back the upright photo
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
GRADIENT16 = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (48, 1))  # 48 x 64, left to right

K, F = "kept", "no_face"
EXPECTED: dict[str, tuple[str, str]] = {
    "astronaut.jpg": (K, K),
    "truncated.jpg": ("truncated", "truncated"),
    "truncated.png": ("truncated", "truncated"),
    "empty.jpg": ("empty", "empty"),
    "empty.png": ("empty", "empty"),
    "text.png": ("not_an_image", "not_an_image"),
    "jpeg named.png": (K, K),  # content decides, not the extension
    "cmyk.jpg": (F, K),
    "cmyk astronaut.jpg": (K, K),
    "gray16.png": (F, K),
    "rgb16.png": (F, K),
    "rgb16.tif": (F, K),
    "float.tif": (F, K),
    "rgba.png": (F, K),
    "palette.png": (F, K),
    "gray.png": (F, K),
    "bilevel.png": (F, K),
    "gray alpha.png": (F, K),
    "gray astronaut.jpg": (K, K),
    "exif3.jpg": (K, K),
    "exif6.jpg": (K, K),
    "exif8.jpg": (K, K),
    "bad exif.jpg": (K, K),
    "astronaut.webp": (K, K),
    "astronaut.bmp": (K, K),
    "astronaut.tiff": (K, K),
    "astronaut.gif": (K, K),
    "animated.gif": (F, K),
    "animated.webp": (F, K),
    "UPPER.JPG": (K, K),
    "UPPER.PNG": (F, K),
    "nested/deeper/ünïcödé façe ☺.jpg": (K, K),
    "with space/a b.png": (F, K),
    "not utf-8 \\xff.jpg": (K, K),  # a name whose bytes are not UTF-8: shown escaped
    "new\nline.png": (F, K),
    "dir.jpg/inside.png": (F, K),
    "dir.jpg": ("ignored", "ignored"),  # a directory named like an image
    ".hidden.png": ("ignored", "ignored"),
    ".cache": ("ignored", "ignored"),  # a hidden folder: not searched
    "notes.txt": ("ignored", "ignored"),
    "link out.png": ("ignored", "ignored"),  # leads outside the folder: never followed
    "broken link.png": ("ignored", "ignored"),
    "link in.jpg": (K, K),  # leads to a file inside the folder: read
    "tiny.png": ("too_small", K),  # below min_face_size (resized up without detection)
    "bomb.png": ("too_large", "too_large"),  # IHDR says 40000 x 40000
    "pixel.png": ("too_small", K),
}


def astronaut() -> np.ndarray:
    from skimage.data import astronaut as load

    return np.asarray(Image.fromarray(load()).resize((256, 256), Image.BICUBIC))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid-looking PNG whose header declares width x height RGB pixels; a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width) * 4, 9)  # a few rows; the decoder would ask for more
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def halves(top, bottom, mode="RGB", size=(64, 48)) -> Image.Image:
    img = Image.new(mode, size, top)
    img.paste(bottom, (0, size[1] // 2, size[0], size[1]))
    return img


def build_hostile(root: Path) -> Path:
    folder = root / "photos"
    for sub in ("nested/deeper", "with space", "dir.jpg", ".cache"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    face = Image.fromarray(astronaut())
    face.save(folder / "astronaut.jpg", quality=95)
    jpeg = _jpeg_bytes(face)
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    buf = io.BytesIO()
    face.save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not a picture\n")
    (folder / "jpeg named.png").write_bytes(jpeg)

    # CMYK: red over blue in ink terms; and a whole photo
    halves((0, 255, 255, 0), (255, 255, 0, 0), mode="CMYK").save(folder / "cmyk.jpg", quality=95)
    face.convert("CMYK").save(folder / "cmyk astronaut.jpg", quality=95)

    # 16 bit: gray (Pillow's I;16), RGB and float via OpenCV / Pillow (R = ramp, G = 0, B = reverse ramp)
    Image.fromarray(GRADIENT16).save(folder / "gray16.png")
    bgr16 = np.dstack([65535 - GRADIENT16, np.zeros_like(GRADIENT16), GRADIENT16])
    cv2.imwrite(str(folder / "rgb16.png"), bgr16)
    cv2.imwrite(str(folder / "rgb16.tif"), bgr16)
    Image.fromarray((GRADIENT16 / 65535.0).astype(np.float32)).save(folder / "float.tif")

    # alpha: left half transparent red, right half opaque blue, a half-transparent black band at the bottom
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[:, :32] = (255, 0, 0, 0)
    rgba[:, 32:] = (0, 0, 255, 255)
    rgba[40:] = (0, 0, 0, 128)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    # palette: index 0 transparent, 1 green, 2 yellow
    pal = Image.fromarray(np.repeat(np.array([[0] * 16 + [1] * 24 + [2] * 24], np.uint8), 48, axis=0), "P")
    pal.putpalette([10, 20, 30, 0, 200, 0, 255, 255, 0] + [0] * 759)
    pal.save(folder / "palette.png", transparency=0)
    halves(40, 220, mode="L").save(folder / "gray.png")
    halves(0, 1, mode="1").save(folder / "bilevel.png")
    gray_alpha = np.zeros((48, 64, 2), np.uint8)  # black: left transparent, right opaque
    gray_alpha[:, 32:, 1] = 255
    Image.fromarray(gray_alpha, "LA").save(folder / "gray alpha.png")
    face.convert("L").save(folder / "gray astronaut.jpg", quality=95)

    # EXIF orientation: the stored pixels are turned; only the tag makes the face upright
    for tag, turn in STORED.items():
        exif = Image.Exif()
        exif[ORIENTATION] = tag
        face.transpose(turn).save(folder / f"exif{tag}.jpg", exif=exif.tobytes(), quality=95)
    bad = bytearray(jpeg)  # an APP1 Exif segment full of garbage right after SOI
    junk = b"Exif\x00\x00" + b"MM\x00\x2a\xff\xff\xff\xff" + b"\xde\xad" * 20
    (folder / "bad exif.jpg").write_bytes(
        bytes(bad[:2]) + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + bytes(bad[2:])
    )

    for ext in ("webp", "bmp", "tiff", "gif"):
        face.save(folder / f"astronaut.{ext}")
    frames = [Image.new("RGB", (64, 48), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(folder / "animated.webp", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    face.save(folder / "UPPER.JPG", quality=95)
    halves((255, 0, 0), (0, 0, 255)).save(folder / "UPPER.PNG")
    face.save(folder / "nested/deeper/ünïcödé façe ☺.jpg", quality=95)
    halves((255, 0, 0), (0, 0, 255)).save(folder / "with space/a b.png")
    face.save(folder / os.fsdecode(b"not utf-8 \xff.jpg"), quality=95)
    halves((255, 0, 0), (0, 0, 255)).save(folder / "new\nline.png")
    halves((255, 0, 0), (0, 0, 255)).save(folder / "dir.jpg/inside.png")
    face.save(folder / ".hidden.png")
    face.save(folder / ".cache/thumb.png")
    (folder / "notes.txt").write_text("holiday 2024\n")
    outside = root / "outside.png"
    face.save(outside)
    (folder / "link out.png").symlink_to(outside)
    (folder / "broken link.png").symlink_to(folder / "missing.png")
    (folder / "link in.jpg").symlink_to("astronaut.jpg")
    Image.fromarray(astronaut()).resize((16, 16)).save(folder / "tiny.png")
    (folder / "bomb.png").write_bytes(png_bomb())
    Image.new("RGB", (1, 1), (9, 9, 9)).save(folder / "pixel.png")
    return folder
