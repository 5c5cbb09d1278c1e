"""One frame's codestream handed to pydicom's decoders as a view of the stored value, never as a copy (issue #27).

pydicom reads an encapsulated frame out of its source into new bytes (``DecodeRunner.decode`` → ``get_frame``), and
its J2K and JPEG-LS plugins copy those again (pylibjpeg-openjpeg into a ``BytesIO`` of a view, pyjpegls into bytes
and a zeroed bytearray): a consistent codestream padded inside, before its end marker, up to the size bound (4 × the
frame + 64 KiB) took 9.8 × its frame of memory to decode. Here:

* :class:`FrameView` is the file pydicom reads the value from; it carries the views of the frames already found in
  it (one fragment a frame: ``framedecode.fragment``), and :func:`install` makes ``DecodeRunner.decode`` hand such a
  frame to the plugins as that view (the frame's header parsed from a copy of its first 64 KiB only, as
  ``guard.check_codestream`` reads it). Any other source or frame goes through pydicom unchanged.
* :func:`j2k_frame` and :func:`jpegls_frame` are the J2K/HTJ2K and JPEG-LS plugins that decode from the view: the
  same libraries as pydicom's plugins (OpenJPEG through pylibjpeg-openjpeg, read through a file over the view;
  CharLS through imagecodecs), the same output and runner options as theirs (``tests/cube/test_pydicomview.py``
  compares every such frame of ../shared/data with pydicom's own plugins).

Memory for a frame is then the decoded frame twice (the plugin's buffer, pydicom's array) and the decoder's own
work, whatever the codestream's size.

Example
-------
>>> f = FrameView(memoryview(b"abcdef")); _ = f.seek(2); f.read(3), f.tell()
(b'cde', 5)
"""

from __future__ import annotations

from io import RawIOBase
from typing import Any, BinaryIO, cast

import imagecodecs
import numpy as np

from cubepacs.errors import CodecError

HEAD = 64 << 10  # the bytes of a codestream its header is parsed from (guard.check_codestream reads as many)
CHUNK = 64 << 10  # the most OpenJPEG is given a read (it asks for 1 MiB, copied into its own buffer)
_ic: Any = imagecodecs  # imagecodecs' stubs do not admit memoryview, which every codec accepts
_INSTALLED: list[Any] = []  # pydicom's own DecodeRunner.decode, once replaced


class FrameView(RawIOBase):
    """A read-only file over a memoryview (pydicom finds a frame's fragments in it and copies only those: given
    bytes, it would work on a copy of the whole value), with the views of the frames already found in it
    (``frames``: index → codestream), which pydicom then decodes in place (:func:`install`).

    Example
    -------
    >>> f = FrameView(memoryview(b"abcdef"), {0: memoryview(b"cd")}); bytes(f.frames[0])
    b'cd'
    """

    def __init__(self, view: memoryview, frames: dict[int, memoryview] | None = None, most: int = -1) -> None:
        self.view, self.pos, self.frames, self.most = view, 0, frames or {}, most  # most: bytes a read gives

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.view) if size is None or size < 0 else min(self.pos + size, len(self.view))
        end = end if self.most < 0 else min(end, self.pos + self.most)
        out = bytes(self.view[self.pos : end])
        self.pos = max(self.pos, end)
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, offset if whence == 0 else self.pos + offset if whence == 1 else len(self.view) + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos


def install() -> None:
    """Make pydicom's ``DecodeRunner.decode`` decode a frame its :class:`FrameView` source already holds from that
    view (its header parsed from a copy of its first :data:`HEAD` bytes); idempotent, process-wide.

    Example
    -------
    >>> install()
    >>> from pydicom.pixels.decoders.base import DecodeRunner
    >>> DecodeRunner.decode.__name__
    'decode_in_place'
    """
    if _INSTALLED:
        return
    from pydicom.pixels.decoders.base import DecodeRunner

    if not all(hasattr(DecodeRunner, a) for a in ("decode", "_get_frame_info", "_decode_frame", "src")):
        return  # another pydicom than 3.0's: frames are copied, as pydicom does (test_pydicomview says so)
    original = DecodeRunner.decode

    def decode_in_place(self: Any, index: int) -> bytes | bytearray:
        src = self.src
        view = src.frames.get(index) if isinstance(src, FrameView) else None
        if view is None:
            return original(self, index)
        self._get_frame_info(bytes(view[:HEAD]))
        return self._decode_frame(view)  # type: ignore[no-any-return]

    decode_in_place.__doc__ = original.__doc__
    DecodeRunner.decode = decode_in_place  # type: ignore[method-assign]
    _INSTALLED.append(original)


def j2k_frame(src: bytes | memoryview, runner: Any) -> bytearray:
    """pydicom decoding plugin for the JPEG 2000 and HTJ2K syntaxes: OpenJPEG through pylibjpeg-openjpeg, as
    pydicom's ``pylibjpeg`` plugin does (a bare codestream or a JP2 file), but reading ``src`` through a file over
    it rather than a copy; the same runner options (YBR_ICT/YBR_RCT are returned as RGB; the container's size
    follows the J2K precision).

    Example
    -------
    >>> import numpy as np, imagecodecs
    >>> from types import SimpleNamespace
    >>> runner = SimpleNamespace(photometric_interpretation="MONOCHROME2", set_option=lambda *a: None,
    ...                          get_option=lambda k, d: 12, bits_stored=12)
    >>> stream = imagecodecs.jpeg2k_encode(np.full((4, 5), 1000, np.uint16), level=0, codecformat="J2K")
    >>> np.frombuffer(j2k_frame(stream, runner), np.uint16).tolist()[:3]
    [1000, 1000, 1000]
    """
    import _openjpeg  # pylibjpeg-openjpeg's extension, a top-level module
    from openjpeg.utils import _get_format

    view = memoryview(src).cast("B")
    form = _get_format(cast(BinaryIO, FrameView(view)))  # a bare codestream, or in a JP2 file (pydicom decodes it)
    code, out = _openjpeg.decode(FrameView(view, most=CHUNK), form, as_array=False)  # OpenJPEG reads on when short
    if code != 0:
        raise CodecError(f"OpenJPEG cannot decode the J2K codestream (error {code})")
    if runner.photometric_interpretation in ("YBR_ICT", "YBR_RCT"):  # OpenJPEG undoes the colour transform
        runner.set_option("photometric_interpretation", "RGB")
    precision = int(runner.get_option("j2k_precision", runner.bits_stored))
    runner.set_option("bits_allocated", 8 if precision <= 8 else 16 if precision <= 16 else 32)
    return out  # type: ignore[no-any-return]


def jpegls_frame(src: bytes | memoryview, runner: Any) -> memoryview:
    """pydicom decoding plugin for the JPEG-LS syntaxes: CharLS through imagecodecs (``jpegls_decode``) from
    ``src`` in place; what pydicom's ``pyjpegls`` plugin returns (CharLS too): samples colour by pixel whatever the
    stream's interleave mode (planar configuration 0), one byte a sample up to 8 bits of precision, two above.

    Example
    -------
    >>> import numpy as np, imagecodecs
    >>> from types import SimpleNamespace
    >>> runner = SimpleNamespace(rows=4, columns=5, samples_per_pixel=1, set_option=lambda *a: None)
    >>> stream = imagecodecs.jpegls_encode(np.full((4, 5), 1000, np.uint16))
    >>> np.frombuffer(jpegls_frame(stream, runner), np.uint16).tolist()[:3]
    [1000, 1000, 1000]
    """
    rows, cols, spp = int(runner.rows), int(runner.columns), int(runner.samples_per_pixel)
    arr = np.asarray(_ic.jpegls_decode(src))  # (rows, columns[, samples]) whatever the interleave mode (a colour-by-
    if arr.shape != ((rows, cols, spp) if spp > 1 else (rows, cols)):
        raise CodecError(f"the JPEG-LS codestream decoded to {arr.shape}; the frame is {rows} × {cols} × {spp}")
    if spp > 1:  # plane stream's samples as a strided view of planes: made colour by pixel here)
        runner.set_option("planar_configuration", 0)
    runner.set_option("bits_allocated", 8 * arr.dtype.itemsize)
    out: Any = np.ascontiguousarray(arr)
    return memoryview(out).cast("B")
