"""pydicom's decoding plugin for the JPEG transfer syntaxes: libjpeg-turbo 3 through imagecodecs (``jpeg8_decode``).

pylibjpeg-libjpeg 2.5.0, pydicom's first plugin for JPEG Baseline, Extended and Lossless (processes 1, 2/4, 14),
leaks native memory on corrupted codestreams: +25.6 / +26.9 MB per 1,000 corrupted JPEG baseline / Lossless frames
(``fuzz/rss.py``, ``docs/security.md``, issue #27), which a client sending corrupted frames turns into a server
growing without bound. libjpeg-turbo 3 decodes the same processes (8- and 12-bit lossy, 2–16-bit lossless) and
leaks nothing on the same inputs; ``codecs.harden_pydicom`` makes :func:`decode_frame` the only plugin of
:data:`SYNTAXES`, wrapped like every other (codestream header checked first, failures raised as ``CodecError``).

It returns what pylibjpeg-libjpeg's plugin returns: the samples as coded, no colour transform (a YCbCr stream stays
YCbCr, pydicom converts it when asked for RGB), one byte a sample up to 8 bits of precision, two above, unsigned
(pydicom reinterprets them with the dataset's Pixel Representation). Lossless frames are identical to
pylibjpeg-libjpeg's; lossy frames are identical to pydicom's Pillow plugin (libjpeg-turbo too) and differ from
pylibjpeg-libjpeg's by at most 1 on about 1 % of samples — two inverse DCTs, both within ISO 10918-2's accuracy
(``tests/cube/test_jpegplugin.py``). A codestream must end with its EOI marker: libjpeg-turbo fills a truncated
scan with grey and only warns, where pylibjpeg-libjpeg failed.

Example
-------
>>> import numpy as np, imagecodecs
>>> frame = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 50)
>>> stream = imagecodecs.jpeg8_encode(frame, lossless=True, bitspersample=12)
>>> bool((np.frombuffer(decode_bytes(stream, 1), np.uint16).reshape(8, 8) == frame).all())
True
"""

from __future__ import annotations

from typing import Any

import imagecodecs

from cubepacs.cube import guard

SYNTAXES = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (processes 2 and 4): 8 or 12 bits
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (process 14), any predictor
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction (selection value 1)
)
NAME = "cubepacs-jpeg"  # the plugin's name in pydicom's decoders

_ic: Any = imagecodecs  # imagecodecs' stubs do not admit memoryview


def decode_bytes(src: bytes | memoryview, samples: int) -> memoryview:
    """The samples of the JPEG codestream ``src`` (``samples`` components), as coded: no colour transform, native
    byte order, 1 byte a sample up to 8 bits, 2 above — a byte view of the decoded array, nothing copied.
    Raises what imagecodecs raises (``Jpeg8Error``) on a stream libjpeg-turbo refuses, ``CodecError`` on one that
    does not end with its EOI marker.

    Example
    -------
    >>> import numpy as np, imagecodecs
    >>> rgb = np.zeros((8, 8, 3), np.uint8); rgb[..., 0] = 200
    >>> ycc = decode_bytes(imagecodecs.jpeg8_encode(rgb, level=100), 3)  # coded YCbCr (BT.601 of 200, 0, 0), kept
    >>> [int(v) for v in np.frombuffer(ycc, np.uint8)[:3]]
    [60, 94, 228]
    """
    guard.ends_complete(src, "JPEG")
    # the same colour space in and out: libjpeg-turbo converts nothing (null conversion), whatever the markers say
    space = {"colorspace": "YCbCr", "outcolorspace": "YCbCr"} if samples == 3 else {}
    arr = _ic.jpeg8_decode(src, **space)
    return memoryview(arr).cast("B")


def decode_frame(src: bytes, runner: Any) -> memoryview:
    """pydicom decoding plugin (``Decoder._available``): one frame's codestream → its samples as coded (see
    :func:`decode_bytes`), which pydicom puts into its array and converts as asked (``raw``, ``as_rgb``).

    Example
    -------
    >>> from cubepacs.cube import codecs  # registers the plugin
    >>> from pydicom.pixels import pixel_array
    >>> pixel_array("../shared/data/single/ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm").shape
    (384, 384)
    """
    return decode_bytes(src, int(runner.samples_per_pixel))
