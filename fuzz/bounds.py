"""Per-frame bounds of the cube reader, measured: time and memory of ``CubeReader.frame`` against the declared frame
size (rows × columns × samples × max(bits, 8)/8 of the instance's description), over cubes of real files and
structure-aware mutants of them (``harnesses._targeted``: pool, columns, descriptions, stored blobs, checksums
recomputed), and a cube corpus when one is given (``fuzz/corpus/cube``, what the cube harness kept).

``python fuzz/bounds.py [--mutants N] [--corpus DIR] [--seed S] [--opaque-mib M]``. Two passes per frame: the
CPU time of ``frame(k)`` alone, then its peak of traced allocations (``tracemalloc``: Python objects and numpy
buffers; a memory-mapped cube's pages are not allocations) over what was allocated before. Prints the largest
ratios (frames of ≥ 64 KB: the data set's files, then mutants decoded and refused apart), the slowest frame, and
the worst inputs; the issue's bounds are ≤ 2 s and ≤ 4 × the declared frame size per frame.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

LARGE = 64 * 1024  # frames at least this large: the ratio of a tiny frame measures Python's fixed costs


def inputs(args: argparse.Namespace) -> list[tuple[str, bytes]]:
    """(name, cube bytes): a cube of each file of ../shared/data/single (each codec in turn), mutants of them,
    and the corpus' files."""
    import harnesses
    import mutants

    from cubepacs.cube.codecs import CODEC_NAMES

    out: list[tuple[str, bytes]] = []
    for k, path in enumerate(sorted(mutants.SINGLE.glob("*.dcm"))):
        codec = CODEC_NAMES[k % len(CODEC_NAMES)]
        try:
            out.append((f"{path.name} ({codec})", mutants.cube_of(path, codec=codec)))
        except Exception:
            continue
    rng = random.Random(args.seed)
    seeds = list(out)
    for n in range(args.mutants):
        name, data = rng.choice(seeds)
        choice = rng.choice((5, 6, 7, 8))
        try:
            out.append((f"mutant {n} of {name} (kind {choice})", harnesses._targeted(data, rng, choice)))
        except Exception:
            continue
    if args.corpus and args.corpus.is_dir():
        out.extend((p.name, p.read_bytes()) for p in sorted(args.corpus.iterdir()) if p.is_file())
    return out


def declared(reader: Any, k: int) -> int:
    """The declared size of series frame ``k`` (its instance's description)."""
    i, _ = reader.locate(k)
    d = reader.desc(i)
    return int(d.rows * d.cols * d.spp * max(d.bits, 8) // 8) if d is not None else 0


def measure(name: str, data: bytes, rows: list[dict[str, Any]]) -> None:
    """Both passes over the first 8 frames of one cube; a row per frame."""
    from cubepacs.cube.reader import CubeReader
    from cubepacs.errors import CubepacsError

    try:
        reader = CubeReader(data)
        count = min(reader.num_frames, 8)
    except CubepacsError:
        return
    for k in range(count):
        size = declared(reader, k)
        fresh = CubeReader(data)  # nothing cached from another frame
        t0 = time.process_time()
        try:
            fresh.frame(k)
            outcome = "decoded"
        except CubepacsError as exc:
            outcome = f"refused: {type(exc).__name__}"
        except Exception as exc:
            outcome = f"UNDECLARED {type(exc).__name__}: {exc}"
        cpu = time.process_time() - t0
        fresh = CubeReader(data)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        try:
            fresh.frame(k)
        except Exception:
            pass
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        rows.append(
            {
                "input": name,
                "frame": k,
                "declared": size,
                "peak": peak,
                "cpu_s": cpu,
                "outcome": outcome,
                "ratio": peak / size if size else float("inf"),
            }
        )


def opaque_last_frame(mib: int) -> dict[str, Any]:
    """CPU time of the last and first frame of an opaque value of about ``mib`` MiB: the real big endian RGB
    (8-bit) made an OW big endian multi-frame instance whose frames are noise (samples ~ N(128, 20): zstd gets ≈ 1.3 :
    1 — a repeated frame would decompress ten times faster) — an ``opaque`` zstd value: no random access, the value
    before a frame decompressed to reach it."""
    import mutants
    import numpy as np
    import pydicom

    from cubepacs.cube.reader import CubeReader

    ds = pydicom.dcmread(mutants.SINGLE / "rgb_us_big_endian.dcm")
    value = bytes(ds.PixelData)
    frames = max((mib << 20) // len(value), 1)
    rng, pixels = np.random.default_rng(0), bytearray()
    for start in range(0, frames * len(value), 1 << 24):  # 16 MiB at a time: the floats are 8 bytes a sample
        n = min(1 << 24, frames * len(value) - start)
        pixels += rng.normal(128, 20, n).clip(0, 255).astype(np.uint8).tobytes()
    ds.PixelData = bytes(pixels)
    del pixels
    ds["PixelData"].VR = "OW"
    ds.NumberOfFrames = frames
    import io

    out = io.BytesIO()
    ds.save_as(out)
    del ds
    reader = CubeReader(mutants.cube_of(out.getvalue()), max_value_bytes=2 << 30)
    size = len(value) * frames
    row: dict[str, Any] = {"frames": frames, "value_mb": round(size / 1e6, 1)}
    for k in (frames - 1, 0):
        t0 = time.process_time()
        reader.frame(k)
        row[f"frame_{k}_cpu_s"] = round(time.process_time() - t0, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutants", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opaque-mib", type=int, default=0,
                        help="also time the last frame of an opaque value of this many MiB")
    args = parser.parse_args()
    if args.opaque_mib:
        print(json.dumps(opaque_last_frame(args.opaque_mib)))
    warnings.filterwarnings("ignore")
    rows: list[dict[str, Any]] = []
    cubes = inputs(args)
    for name, data in cubes:
        measure(name, data, rows)
    large = [r for r in rows if r["declared"] >= LARGE]
    summary: dict[str, Any] = {
        "inputs": len(cubes),
        "frames": len(rows),
        "large_frames": len(large),
        "undeclared": sum(r["outcome"].startswith("UNDECLARED") for r in rows),
    }
    real = [r for r in large if not r["input"].startswith("mutant ")]  # the data set's files, untouched
    worst_real = max(real, key=lambda r: r["ratio"], default=None)
    summary["max_ratio_real"] = round(worst_real["ratio"], 2) if worst_real else None
    summary["worst_real"] = {k: worst_real[k] for k in ("input", "frame", "outcome")} if worst_real else None
    for outcome in ("decoded", "refused"):
        some = [r for r in large if r["outcome"].startswith(outcome) and r["input"].startswith("mutant ")]
        worst = max(some, key=lambda r: r["ratio"], default=None)
        summary[f"max_ratio_{outcome}"] = round(worst["ratio"], 2) if worst else None
        summary[f"worst_{outcome}"] = {k: worst[k] for k in ("input", "frame", "declared", "peak")} if worst else None
    slowest = max(rows, key=lambda r: r["cpu_s"], default=None)
    summary["slowest_cpu_s"] = round(slowest["cpu_s"], 3) if slowest else None
    summary["slowest"] = slowest["input"] if slowest else None
    summary["largest_peak_mb"] = round(max((r["peak"] for r in rows), default=0) / 1e6, 1)
    for r in sorted(large, key=lambda r: -r["ratio"])[:8]:
        print(
            f"{r['ratio']:6.2f}x  {r['peak'] / 1e6:8.2f} MB peak  {r['declared'] / 1e6:8.2f} MB frame  "
            f"{r['cpu_s']:6.3f} s  {r['outcome'][:30]:30}  {r['input']} #{r['frame']}"
        )
    for r in rows:
        if r["outcome"].startswith("UNDECLARED"):
            print("UNDECLARED", r["input"], r["frame"], r["outcome"][:300])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
