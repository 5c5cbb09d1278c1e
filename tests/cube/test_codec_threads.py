"""HTJ2K used first by two threads at once is still bit-exact (OpenJPH's lazily filled tables; cube/codecs.py).

Each try is a fresh process, because the race is only on a process's first use; real MR frames from
../shared/data. Before the fix, 5 of 20 such processes gave a frame that was not bit-exact or an "ojph error".
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import SERIES, dicom_files

SCRIPT = """
import sys, numpy as np, pydicom
from concurrent.futures import ThreadPoolExecutor
from cubepacs.cube.codecs import get_codec
codec = get_codec(2)
frames = [pydicom.dcmread(p).pixel_array for p in sys.argv[1:]]
def round_trip(a):
    out = np.empty_like(a)
    codec.decode(codec.encode(a), out)
    return bool(np.array_equal(out, a))
with ThreadPoolExecutor(2) as pool:
    print(all(pool.map(round_trip, frames)))
"""


def test_htj2k_first_use_from_two_threads_is_exact() -> None:
    files = [str(p) for p in dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750")))[:6]]
    for _ in range(8):
        out = subprocess.run([sys.executable, "-c", SCRIPT, *files], capture_output=True, text=True, timeout=120,
                             check=False)
        assert out.returncode == 0 and out.stdout.strip() == "True", out.stdout + out.stderr
