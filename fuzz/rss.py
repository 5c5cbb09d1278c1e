"""Process growth of the cube reader under corrupted frames, per seed file: what a long fuzzing run's RSS climbs by.

``python fuzz/rss.py [--seconds S] [--codec C] [NAME ...]``: for each file of ../shared/data/single (or those
named), a cube of it (codec ``C``, zstd by default), then for ``S`` seconds: a few bytes of one stored blob
flipped, every checksum recomputed (``harnesses.fix_checksums``), the cube opened and its first two frames read,
errors ignored. Prints the resident set's growth per 1,000 inputs after a warm-up of 200 (``/proc/self/statm``),
and the traced Python allocations' (``tracemalloc`` is not started: a growth the traced memory does not show
is native memory, a decoder's).

``--jpeg-plugin pylibjpeg`` puts pydicom's pylibjpeg-libjpeg plugin back in front of ours for the JPEG syntaxes
(wrapped as ours is): the decoder before issue #27's fix, which leaks on corrupted codestreams.

Example: ``nice -n 19 python fuzz/rss.py --seconds 20 jpeg_baseline_rgb_dcmtk_sc.dcm ts_rle_siemens_mr.dcm``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))
os.environ["RUST_BACKTRACE"] = "0"


def rss_mb() -> float:
    """This process' resident set, MB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def growth(path: Path, codec: str, seconds: float) -> tuple[int, float]:
    """(inputs read, RSS growth in MB per 1,000 inputs after the first 200) for corrupted cubes of ``path``."""
    import harnesses
    import mutants

    from cubepacs.cube.reader import CubeReader

    data = mutants.cube_of(path, codec=codec)
    reader = CubeReader(data)
    blobs = [(reader.header.data_offset + int(r["offset"]), int(r["length"])) for r in reader.index if r["length"]]
    if not blobs:
        return 0, 0.0
    rng, n, first, t0 = random.Random(1), 0, 0.0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        start, length = rng.choice(blobs)
        mutated = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            mutated[start + rng.randrange(length)] = rng.randrange(256)
        try:
            cube = CubeReader(harnesses.fix_checksums(bytes(mutated)))
            for k in range(min(cube.num_frames, 2)):
                try:
                    cube.frame(k)
                except Exception:  # any failure: only memory is measured here
                    pass
        except Exception:
            pass
        n += 1
        if n == 200:
            gc.collect()
            first = rss_mb()
    gc.collect()
    return n, (rss_mb() - first) / (n - 200) * 1000 if n > 200 else 0.0


def use_pylibjpeg() -> None:
    """pydicom's pylibjpeg-libjpeg plugin as the only decoder of the JPEG syntaxes (wrapped like ours)."""
    from pydicom.pixels.decoders import pylibjpeg
    from pydicom.pixels.decoders.base import get_decoder

    from cubepacs.cube import jpegplugin
    from cubepacs.cube.codecs import _checked_plugin

    for syntax in jpegplugin.SYNTAXES:
        available = get_decoder(syntax)._available
        available.clear()
        available["pylibjpeg"] = _checked_plugin(syntax, pylibjpeg._decode_frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--codec", default="zstd")
    parser.add_argument("--jpeg-plugin", choices=("ours", "pylibjpeg"), default="ours")
    args = parser.parse_args()
    if args.jpeg_plugin == "pylibjpeg":
        use_pylibjpeg()
    warnings.filterwarnings("ignore")
    import mutants

    paths = [mutants.SINGLE / n for n in args.names] or sorted(mutants.SINGLE.glob("*.dcm"))
    for path in paths:
        try:
            n, mb = growth(path, args.codec, args.seconds)
        except Exception as exc:  # a file the cube cannot hold
            print(f"{path.name}: {type(exc).__name__}: {exc}")
            continue
        print(f"{path.name}: {n} inputs, {mb:+.2f} MB per 1,000", flush=True)


if __name__ == "__main__":
    main()
