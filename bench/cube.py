"""Benchmark the cube against pydicom and dicube 0.3.0 on the real series of ../shared/data, in one run.

Usage: .venv/bin/python bench/cube.py [--series NAME …] [--no-dicube]

dicube is installed into its own environment (.bench-venv) on first use, never into the project's.
Every number is a ratio against an anchor measured in the same run; absolute times are printed for context.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pydicom
from _probe import median_time  # bench/ is on sys.path when this runs as a script

import cubepacs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "series"
BENCH_VENV = ROOT / ".bench-venv"


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".txt" and p.name != "DIRFILE")


def dicube_python() -> Path:
    py = BENCH_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "dicube==0.3.0"], check=True)
    return py


def probe(python: Path, lib: str, series: Path, work: Path) -> dict[str, float]:
    """Run bench/_probe.py; a library that fails on the series gives ``{"failed": 1}`` (reason on stderr)."""
    out = subprocess.run([str(python), str(ROOT / "bench" / "_probe.py"), lib, str(series), str(work)],
                         check=False, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {lib} failed on {series.name}: {reason[:300]}", file=sys.stderr)
        return {"failed": 1.0}
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_series(series: Path, work: Path, with_dicube: bool) -> dict[str, float]:
    files = dicom_files(series)
    r: dict[str, float] = {"files": len(files)}
    r["pydicom_headers_s"] = median_time(lambda: [pydicom.dcmread(f, stop_before_pixels=True) for f in files], 3)
    r["pydicom_pixels_s"] = median_time(lambda: [pydicom.dcmread(f).pixel_array for f in files], 3)
    image = cubepacs.load_from_dicom_folder(series)
    r["raw_mb"] = image.raw_image.nbytes / 1e6
    for codec in ("htj2k", "jpegls", "blosc2"):
        path = work / f"{codec}.dcbs"
        cubepacs.save(image, path, codec=codec)
        r[f"{codec}_size"] = path.stat().st_size
        r[f"{codec}_load_s"] = median_time(lambda path=path: cubepacs.load(path).raw_image, 5)
    default = work / "htj2k.dcbs"
    r["load_meta_s"] = median_time(lambda: cubepacs.load_meta(default), 50)
    loaded = cubepacs.load(default)
    mid = loaded.num_frames // 2
    r["frame_s"] = median_time(lambda: loaded.frame(mid), 50)
    ours = probe(Path(sys.executable), "cubepacs", series, work / "probe")
    r["convert_s"], r["peak_mb"] = ours["convert_s"], ours["peak_mb"]
    if with_dicube:
        theirs = probe(dicube_python(), "dicube", series, work / "probe")
        for k, v in theirs.items():
            r[f"dicube_{k}"] = v
    return r


def report(results: dict[str, dict[str, float]], with_dicube: bool) -> None:
    rows: list[dict[str, object]] = []
    for name, r in results.items():
        row: dict[str, object] = {
            "series": name,
            "files": int(r["files"]),
            "load_meta ×pydicom hdr": r["pydicom_headers_s"] / r["load_meta_s"],
            "load_meta ms": r["load_meta_s"] * 1e3,
            "pixels htj2k ×pydicom": r["pydicom_pixels_s"] / r["htj2k_load_s"],
            "pixels blosc2 ×pydicom": r["pydicom_pixels_s"] / r["blosc2_load_s"],
            "1 frame ms": r["frame_s"] * 1e3,
            "peak mem ×raw": r["peak_mb"] / r["raw_mb"],
            "ratio htj2k": r["raw_mb"] * 1e6 / r["htj2k_size"],
            "ratio jpegls": r["raw_mb"] * 1e6 / r["jpegls_size"],
        }
        if with_dicube and "dicube_failed" in r:
            row["dicube"] = "failed on this series (see stderr)"
        elif with_dicube:
            row.update({
                "load_meta ×dicube": r["dicube_load_meta_s"] / r["load_meta_s"],
                "pixels htj2k ×dicube": r["dicube_load_s"] / r["htj2k_load_s"],
                "size htj2k /dicube": r["htj2k_size"] / r["dicube_size"],
                "size jpegls /dicube": r["jpegls_size"] / r["dicube_size"],
                "convert ×dicube": r["dicube_convert_s"] / r["convert_s"],
            })
        rows.append(row)
    keys = set.intersection(*(set(r) for r in results.values()))
    total = {k: sum(r[k] for r in results.values()) for k in keys}
    both = [r for r in results.values() if "dicube_size" in r]
    total_d = {k: sum(r[k] for r in both) for k in (both[0] if both else {})}
    summary: dict[str, object] = {"series": "ALL (sums)", "files": int(total["files"]),
               "load_meta ×pydicom hdr": total["pydicom_headers_s"] / total["load_meta_s"],
               "pixels htj2k ×pydicom": total["pydicom_pixels_s"] / total["htj2k_load_s"],
               "pixels blosc2 ×pydicom": total["pydicom_pixels_s"] / total["blosc2_load_s"],
               "ratio htj2k": total["raw_mb"] * 1e6 / total["htj2k_size"],
               "ratio jpegls": total["raw_mb"] * 1e6 / total["jpegls_size"]}
    if with_dicube and both:
        summary.update({"dicube series": len(both),
                        "load_meta ×dicube": total_d["dicube_load_meta_s"] / total_d["load_meta_s"],
                        "pixels htj2k ×dicube": total_d["dicube_load_s"] / total_d["htj2k_load_s"],
                        "size htj2k /dicube": total_d["htj2k_size"] / total_d["dicube_size"],
                        "size jpegls /dicube": total_d["jpegls_size"] / total_d["dicube_size"],
                        "convert ×dicube": total_d["dicube_convert_s"] / total_d["convert_s"]})
    rows.append(summary)
    for row in rows:
        print(f"\n## {row['series']}")
        for k, v in row.items():
            if k != "series":
                print(f"  {k:<26} {v:10.2f}" if isinstance(v, float) else f"  {k:<26} {v!s:>10}")
    print("\nraw JSON:", json.dumps(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", nargs="*", help="series folder names (default: all)")
    ap.add_argument("--no-dicube", action="store_true", help="skip the dicube comparison")
    args = ap.parse_args()
    folders = sorted(p for p in DATA.iterdir() if p.is_dir() and (not args.series or p.name in args.series))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for folder in folders:
            print(f"benchmarking {folder.name} …", file=sys.stderr)
            results[folder.name] = bench_series(folder, Path(tmp) / folder.name, not args.no_dicube)
    report(results, not args.no_dicube)


if __name__ == "__main__":
    main()
