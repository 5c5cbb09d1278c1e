"""Rendered images (PS3.18 8.3.5 ``/rendered``, ``/thumbnail``): stored values → a picture a person can read.

Grayscale, per PS3.3 C.11 (the grayscale pipeline): the Modality LUT (Rescale Slope/Intercept or a Modality LUT
Sequence), then one VOI transformation straight to the display range 0–255 — the ``window`` query parameter
(``center,width[,function]`` in modality output units, function ``linear``, ``linear_exact`` or ``sigmoid``,
C.11.2.1.2–3), else the instance's VOI LUT Sequence (its output, 0 to 2ⁿ−1 for n bits per entry, C.11.2.1.1,
scaled to 0–255), else its first Window Center/Width with its VOI LUT Function, else the full range of the frame.
A multi-frame (enhanced) instance's Pixel Value Transformation and Frame VOI LUT functional groups count for
their frame (C.7.6.16.2.9–10). MONOCHROME1 (its lowest value is white, C.7.6.3.1.2) or a Presentation LUT Shape
INVERSE (C.11.6) inverts the result once.
Colour: PALETTE COLOR through its lookup tables (0 to 2ⁿ−1 scaled to 0–255), YBR_FULL/YBR_FULL_422 converted to
RGB (JPEG 2000's YBR_RCT/ICT arrive as RGB from the decoder), RGB as it is.

pydicom does each step — ``apply_modality_lut``, ``apply_windowing`` (given the display range 0–255 as its
output range, rather than the stored range shifted by the rescale, which it uses by default), ``apply_voi``,
``apply_color_lut``, ``convert_color_space`` — so the image is pydicom's, only mapped to 8 bits.

Example
-------
>>> parse_window("40,400")
(40.0, 400.0, 'LINEAR')
>>> parse_window("40")
Traceback (most recent call last):
...
ValueError: window must be 'center,width[,linear|linear_exact|sigmoid]' with width > 0 (≥ 1 for linear), not '40'
>>> import numpy as np, pydicom
>>> ds = pydicom.Dataset(); ds.PhotometricInterpretation = "MONOCHROME2"
>>> ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
>>> grayscale(ds, np.array([[0, 1024, 1064, 2048]]), (40.0, 400.0, "LINEAR")).tolist()  # -1024, 0, 40, 1024 HU
[[0, 102, 128, 255]]
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

FUNCTIONS = {"linear": "LINEAR", "linear_exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
# what an enhanced instance's functional groups say per frame (PS3.3 C.7.6.16.2.9, C.7.6.16.2.10)
_FRAME_GROUPS = {"PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
                 "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction")}


def parse_window(text: str) -> tuple[float, float, str]:
    """(center, width, VOI LUT function) of a ``window`` query value; ValueError with the reason."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        center, width = float(parts[0]), float(parts[1])
        function = FUNCTIONS[parts[2].lower()] if len(parts) == 3 else "LINEAR"
        if not (np.isfinite(center) and np.isfinite(width) and width > 0) or (function == "LINEAR" and width < 1):
            raise ValueError
    except (ValueError, KeyError):
        raise ValueError(f"window must be 'center,width[,linear|linear_exact|sigmoid]' with width > 0 "
                         f"(≥ 1 for linear), not {text[:60]!r}") from None
    return center, width, function


def frame_attributes(ds: Any, frame: int = 0) -> Any:
    """``ds`` with frame ``frame``'s (from 0) rescale and window from an enhanced instance's functional groups
    (per-frame before shared) set at the top level, where pydicom's LUT functions look; ``ds`` itself when it
    has none."""
    items = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and 0 <= frame < len(per_frame):
        items.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        items.append(shared[0])
    found: dict[str, Any] = {}
    for group, keywords in _FRAME_GROUPS.items():
        for item in items:
            macro = item.get(group)
            if macro:
                found.update({k: macro[0][k].value for k in keywords if k in macro[0] and k not in found})
                break
    if not found:
        return ds
    flat = detached(ds)
    for keyword, value in found.items():
        setattr(flat, keyword, value)
    return flat


def detached(ds: Any) -> Any:
    """A dataset with ``ds``'s elements, file meta and encoding whose element table is its own: what is set or
    deleted on it leaves ``ds`` as it was (``copy.copy`` of a pydicom Dataset shares the table).

    Example
    -------
    >>> import pydicom
    >>> ds = pydicom.Dataset(); ds.WindowCenter = 40
    >>> d = detached(ds); d.WindowCenter = 50; float(ds.WindowCenter)
    40.0
    >>> del d.WindowCenter; "WindowCenter" in ds
    True
    """
    import copy

    from pydicom import Dataset

    out = Dataset({tag: copy.copy(elem) for tag, elem in ds.items()})  # pydicom sets an existing element's value
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    implicit, little = ds.original_encoding
    out.set_original_encoding(implicit, little, ds.original_character_set)
    return out


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (values.astype(np.float64) - low) * (255.0 / max(high - low, 1e-12))
    return np.asarray(np.clip(np.round(scaled), 0, 255), np.uint8)


def _own_window(ds: Any) -> tuple[float, float, str] | None:
    """The instance's first Window Center/Width and VOI LUT Function; None when absent or not usable (an empty
    value, a width the function does not allow): the next VOI step applies."""
    try:
        values = [ds[k].value for k in ("WindowCenter", "WindowWidth")]
        center, width = (float(v[0] if ds[k].VM > 1 else v) for k, v in zip(("WindowCenter", "WindowWidth"),
                                                                           values, strict=True))
        function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if function not in FUNCTIONS.values() or not (np.isfinite(center) and np.isfinite(width) and width > 0) or (
            function == "LINEAR" and width < 1):
        return None
    return center, width, function


def _windowed(values: np.ndarray, ds: Any, window: tuple[float, float, str] | None) -> np.ndarray | None:
    """C.11.2.1.2–3 to 0–255 (pydicom's ``apply_windowing`` with 0–255 as its output range); None without a
    window."""
    from pydicom import Dataset
    from pydicom.pixels.processing import apply_windowing

    if window is None:
        window = _own_window(ds)
        if window is None:
            return None
    display = Dataset()  # the output range: BitsStored 8, unsigned, no rescale → y_min 0, y_max 255
    display.PhotometricInterpretation, display.BitsStored, display.PixelRepresentation = "MONOCHROME2", 8, 0
    display.WindowCenter, display.WindowWidth, display.VOILUTFunction = window
    return np.asarray(np.clip(np.round(apply_windowing(values, display)), 0, 255), np.uint8)


def grayscale(ds: Any, stored: np.ndarray, window: tuple[float, float, str] | None = None,
              frame: int = 0) -> np.ndarray:
    """8-bit display values of one grayscale frame (``frame``: its index, from 0, for per-frame attributes)."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi

    ds = frame_attributes(ds, frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of a float input to a VOI LUT: C.11.2.1.1 truncates
        values = apply_modality_lut(stored, ds)
        out: np.ndarray | None
        if window is None and ds.get("VOILUTSequence"):  # preferred to a window beside it, as pydicom does
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            out = _scaled(apply_voi(values, ds), 0, 2.0 ** bits - 1)
        else:
            out = _windowed(values, ds, window)
        if out is None:
            out = _scaled(values, float(np.min(values)), float(np.max(values)))
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1" or (
            str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"):
        out = 255 - out  # one inversion: enhanced IODs pair MONOCHROME1 with INVERSE (C.8.16.2.1.1.1)
    return out


def colour(ds: Any, stored: np.ndarray) -> np.ndarray:
    """8-bit RGB of one colour frame (palette applied, YBR converted)."""
    from pydicom.pixels.processing import apply_color_lut, convert_color_space

    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if photometric == "PALETTE COLOR":
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
            return _scaled(apply_color_lut(stored, ds), 0, 2.0 ** bits - 1)
        if photometric in ("YBR_FULL", "YBR_FULL_422"):
            stored = convert_color_space(stored, "YBR_FULL", "RGB")
    if stored.dtype.itemsize > 1:
        return _scaled(stored, 0, float(2 ** int(ds.get("BitsStored", 8) or 8) - 1))
    return np.asarray(stored, np.uint8)


def render(ds: Any, stored: np.ndarray, window: tuple[float, float, str] | None = None,
           thumbnail: bool = False, frame: int = 0) -> np.ndarray:
    """The display image (uint8, rows × cols or rows × cols × 3) of frame ``frame`` (from 0) of ``ds`` given its
    stored values; a thumbnail keeps every n-th row and column (at most 128 on the longer side, about)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR" or stored.ndim == 3:
        out = colour(ds, stored)
    else:
        out = grayscale(ds, stored, window, frame)
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
