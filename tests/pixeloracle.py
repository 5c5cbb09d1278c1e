"""pydicom's own decoders, as installed, for the tests' oracles.

``cube/codecs.harden_pydicom`` (run when ``cubepacs.cube.codecs`` is imported) makes the project's plugins the only
ones pydicom has for RLE Lossless (``cube/rle.py``), the JPEG syntaxes (``cube/jpegplugin.py``), JPEG-LS and
JPEG 2000 (``cube/pydicomview.py``), process-wide — so in a test process a plain ``pixel_array`` decodes those with
the code under test. An oracle must not: inside :func:`reference_decoders` pydicom decodes RLE with its own
pure-Python decoder, lossy JPEG with its Pillow plugin (then pylibjpeg-libjpeg, for what Pillow cannot: 12-bit),
lossless JPEG with pylibjpeg-libjpeg, JPEG 2000 with pylibjpeg-openjpeg and JPEG-LS with pyjpegls.

Example
-------
>>> from pydicom.pixels import pixel_array
>>> with reference_decoders():
...     pixel_array("../shared/data/single/ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm").shape
(384, 384)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

RLE = "1.2.840.10008.1.2.5"
J2K = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
       "1.2.840.10008.1.2.4.203")  # fmt: skip
JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
LOSSY_JPEG = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
LOSSLESS_JPEG = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")


def _references() -> dict[str, dict[str, Callable[..., Any]]]:
    from pydicom.pixels.decoders import pillow, pyjpegls, pylibjpeg, rle

    lossy = {"pillow": pillow._decode_frame, "pylibjpeg": pylibjpeg._decode_frame}
    lossless = {"pylibjpeg": pylibjpeg._decode_frame}
    return {RLE: {"pydicom": rle._decode_frame}, **{u: lossy for u in LOSSY_JPEG},
            **{u: lossless for u in LOSSLESS_JPEG}, **{u: {"pylibjpeg": pylibjpeg._decode_frame} for u in J2K},
            **{u: {"pyjpegls": pyjpegls._decode_frame} for u in JPEG_LS}}


@contextmanager
def reference_decoders() -> Iterator[None]:
    """pydicom's own plugins for RLE, JPEG, JPEG-LS and J2K while the block runs, the project's again after it."""
    from pydicom.pixels.decoders import base

    from cubepacs.cube.codecs import harden_pydicom

    harden_pydicom()  # first: installed inside the block (a lazy import), it would be undone by the restore

    refs, saved = _references(), {}
    for uid, (decoder, _) in base._PIXEL_DATA_DECODERS.items():
        if str(uid) in refs:
            saved[str(uid)] = dict(decoder._available)
            decoder._available.clear()
            decoder._available.update(refs[str(uid)])
    try:
        yield
    finally:
        for uid, (decoder, _) in base._PIXEL_DATA_DECODERS.items():
            if str(uid) in saved:
                decoder._available.clear()
                decoder._available.update(saved[str(uid)])


def same_pixels(a: Any, b: Any, syntax: str) -> bool:
    """Whether two decodings of the same pixels agree: exactly, except that a lossy JPEG (``syntax``: the stored
    one) may differ by 1 — decoders round their inverse DCT differently, within ISO/IEC 10918-2's accuracy
    (libjpeg-turbo and pylibjpeg-libjpeg differ by 1 on ≈ 1 % of a 12-bit image's samples).

    >>> import numpy as np
    >>> same_pixels(np.array([3, 4]), np.array([3, 5]), LOSSY_JPEG[1]), same_pixels(np.array([3]), np.array([4]), RLE)
    (True, False)
    """
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if syntax in LOSSY_JPEG:
        return bool((np.abs(a.astype(np.int64) - b.astype(np.int64)) <= 1).all())
    return bool(np.array_equal(a, b))
