"""Measurements run in a fresh process (so peak memory is the conversion's own), for cubepacs or dicube.

Usage: python bench/_probe.py {cubepacs|dicube} SERIES_DIR WORK_DIR
Prints one JSON object. Run by bench/cube.py; dicube runs in its own virtual environment.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path


def median_time(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of ``repeat`` calls (bench/cube.py uses it too)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    lib, series, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    cube = work / f"{lib}.dcbs"
    if lib == "dicube":
        import dicube as m
    else:
        import cubepacs as m  # type: ignore[no-redef]
    t = time.perf_counter()
    image = m.load_from_dicom_folder(str(series))
    m.save(image, str(cube))
    convert = time.perf_counter() - t
    del image
    tracemalloc.start()  # a second conversion, traced: peak bytes allocated (numpy and Python objects)
    image = m.load_from_dicom_folder(str(series))
    m.save(image, str(cube))
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    del image
    result = {
        "convert_s": convert,
        "peak_mb": peak,
        "size": cube.stat().st_size,
        "load_meta_s": median_time(lambda: m.load_meta(str(cube)), 20),
        "load_s": median_time(lambda: m.load(str(cube)).raw_image, 5),
    }
    print(json.dumps(result))
    os.unlink(cube)


if __name__ == "__main__":
    main()
