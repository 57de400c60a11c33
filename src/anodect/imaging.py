"""Reading CT slices and mapping them to the 8-bit pixels both models see.

Scanner exports are 16-bit (sometimes 8-bit, sometimes RGB); the models work on
8-bit grey crops. One window per scan maps the first to the second, so that
PatchCore and RF-DETR see exactly the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile


class SliceReadError(RuntimeError):
    """A slice that cannot be used; the message names the file and the reason."""


def to_grey(image: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Return a 2-D grey image from a grey, RGB or RGBA array, keeping the dtype.

    CT is one channel; RGB exports carry it three times. Luminance weights are
    used so that a genuinely coloured export still maps to a sensible grey.
    """
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return np.ascontiguousarray(rgb[..., 0])
        grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if np.issubdtype(image.dtype, np.integer):
            grey = np.clip(np.rint(grey), 0, np.iinfo(image.dtype).max).astype(image.dtype)
        return grey
    raise SliceReadError(f"{path}: unsupported image shape {image.shape} (need HxW, HxWx3 or HxWx4)")


def read_slice(path: str | Path, page: int | None = None) -> np.ndarray:
    """Read one slice (a single-page TIFF, or one page of a stack) as a 2-D array.

    Raises:
        SliceReadError: the file is missing, empty, not a TIFF, truncated, or has
            an unsupported shape or dtype.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise SliceReadError(f"{path}: empty file")
        with tifffile.TiffFile(path) as tif:
            idx = 0 if page is None else page
            if idx >= len(tif.pages):
                raise SliceReadError(f"{path}: page {idx} requested but the file has {len(tif.pages)}")
            image = tif.pages[idx].asarray()
    except SliceReadError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt input
        raise SliceReadError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    if image.dtype.kind not in "uif":
        raise SliceReadError(f"{path}: unsupported pixel type {image.dtype}")
    return to_grey(image, path)


@dataclass(frozen=True)
class Window:
    """A linear intensity window: ``low`` maps to 0 and ``high`` to 255."""

    low: float
    high: float

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.high <= self.low:
            # A constant scan has no contrast to show; map it to mid-grey rather
            # than divide by zero.
            return np.full(image.shape, 128, np.uint8)
        scaled = (image.astype(np.float32) - self.low) * (255.0 / (self.high - self.low))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def choose_window(images: list[np.ndarray], settings: dict) -> Window:
    """Pick the window for one scan from the ``window`` config section.

    ``auto`` passes 8-bit data through unchanged (the original tool's behaviour, so
    its models see the pixels they were trained on) and windows anything deeper by
    per-scan percentiles; ``none`` is a plain dtype-range scaling.
    """
    mode = settings.get("mode", "auto")
    dtype = images[0].dtype
    if mode == "fixed":
        return Window(float(settings["min"]), float(settings["max"]))
    if mode == "none" or (mode == "auto" and dtype == np.uint8):
        if np.issubdtype(dtype, np.integer):
            return Window(0.0, float(np.iinfo(dtype).max))
        return Window(0.0, 1.0)
    # Percentiles over a strided sample of every slice: stable for the scan and
    # cheap (a few hundred thousand values whatever the slice count).
    step = max(1, int(np.sqrt(len(images) * images[0].size / 250_000)))
    sample = np.concatenate([img[::step, ::step].ravel() for img in images]).astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return Window(0.0, 0.0)
    low, high = np.percentile(sample, [settings["low_percentile"], settings["high_percentile"]])
    return Window(float(low), float(high))
