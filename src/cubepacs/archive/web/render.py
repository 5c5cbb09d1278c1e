"""Rendered images (PS3.18 8.3.5 ``/rendered``, ``/thumbnail``): stored values → a picture a person can read.

Grayscale: Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence), then VOI LUT — the ``window``
parameter (``center,width[,function]`` in output units, function ``linear``, ``linear_exact`` or ``sigmoid``), else
the instance's own Window Center/Width or VOI LUT, else the full range of the frame — scaled to 8 bits;
MONOCHROME1 inverted. Colour: PALETTE COLOR through its lookup tables, YBR_FULL/YBR_FULL_422 converted to RGB
(JPEG 2000's YBR_RCT/ICT arrive as RGB from the decoder). pydicom's own ``apply_modality_lut``, ``apply_voi_lut``,
``apply_color_lut`` and ``convert_color_space`` do the work, so that the result is what pydicom users expect.

Example
-------
>>> parse_window("40,400")
(40.0, 400.0, 'LINEAR')
>>> parse_window("40")
Traceback (most recent call last):
...
ValueError: window must be 'center,width[,linear|linear_exact|sigmoid]' with width > 0, not '40'
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np

FUNCTIONS = {"linear": "LINEAR", "linear_exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


def parse_window(text: str) -> tuple[float, float, str]:
    """(center, width, VOI LUT function) of a ``window`` query value; ValueError with the reason."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        center, width = float(parts[0]), float(parts[1])
        function = FUNCTIONS[parts[2].lower()] if len(parts) == 3 else "LINEAR"
        if not (np.isfinite(center) and np.isfinite(width) and width > 0):
            raise ValueError
    except (ValueError, KeyError):
        raise ValueError(f"window must be 'center,width[,linear|linear_exact|sigmoid]' with width > 0, "
                         f"not {text[:60]!r}") from None
    return center, width, function


def _to_8bit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (values.astype(np.float64) - low) / max(high - low, 1e-9)
    return np.asarray(np.clip(np.round(scaled * 255), 0, 255), np.uint8)


def _voi_range(ds: Any) -> tuple[float, float]:
    """The output range pydicom's apply_voi_lut maps into (by Bits Stored and Pixel Representation)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0 ** bits - 1


def grayscale(ds: Any, stored: np.ndarray, window: tuple[float, float, str] | None = None) -> np.ndarray:
    """8-bit display values of one grayscale frame."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = apply_modality_lut(stored, ds)
        has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
        if window is not None:
            ds = copy.copy(ds)
            ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = window[0], window[1], window[2]
            if "VOILUTSequence" in ds:
                del ds.VOILUTSequence
        if window is not None or has_voi:
            out = _to_8bit(apply_voi_lut(values, ds, prefer_lut=window is None), *_voi_range(ds))
        else:
            out = _to_8bit(values, float(np.min(values)), float(np.max(values)))
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 255 - out
    return out


def colour(ds: Any, stored: np.ndarray) -> np.ndarray:
    """8-bit RGB of one colour frame (palette applied, YBR converted)."""
    from pydicom.pixels.processing import apply_color_lut, convert_color_space

    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(stored, ds)
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
            return np.asarray(rgb >> (bits - 8) if bits > 8 else rgb, np.uint8)
        if photometric in ("YBR_FULL", "YBR_FULL_422"):
            stored = convert_color_space(stored, "YBR_FULL", "RGB")
    if stored.dtype.itemsize > 1:
        return _to_8bit(stored, 0, float(2 ** int(ds.get("BitsStored", 8) or 8) - 1))
    return np.asarray(stored, np.uint8)


def render(ds: Any, stored: np.ndarray, window: tuple[float, float, str] | None = None,
           thumbnail: bool = False) -> np.ndarray:
    """The display image (uint8, rows × cols or rows × cols × 3) of one frame's stored values."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR" or stored.ndim == 3:
        out = colour(ds, stored)
    else:
        out = grayscale(ds, stored, window)
    if thumbnail:
        step = max(1, max(out.shape[:2]) // 128)
        out = out[::step, ::step]
    return np.ascontiguousarray(out)


def encode(image: np.ndarray, accept: str) -> tuple[bytes, str]:
    """(bytes, media type): PNG when the Accept header asks for it, JPEG otherwise."""
    import imagecodecs

    if "png" in accept.lower():
        return bytes(imagecodecs.png_encode(image)), "image/png"
    return bytes(imagecodecs.jpeg8_encode(image, level=90)), "image/jpeg"
