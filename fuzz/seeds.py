"""Seed corpora made from ../shared/data (never committed: written under fuzz/corpus/<target>/ on first use)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SMALL = ["ct_ge_small_signed.dcm", "ts_rle_siemens_mr.dcm", "ts_jpegls_lossless_siemens_mr.dcm",
         "ts_j2k_lossless_siemens_mr.dcm", "ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm", "rle_rgb_sc.dcm",
         "jpeg_baseline_rgb_dcmtk_sc.dcm", "htj2k_lossless_rgb_sc.dcm", "ts_explicit_be_siemens_mr.dcm",
         "deflated_explicit_le_sc_8bit.dcm", "seg_1bit_liver.dcm", "nested_private_sequences_min.dcm",
         "sr_comprehensive_nested.dcm", "ybr_full_uncompressed_sc.dcm", "palette_color_us_philips_8bit.dcm"]


CODESTREAM_SEEDS = {0: DATA / "single" / "ts_rle_siemens_mr.dcm",  # RLE, 384 × 384, 16 bits (pydicom)
                    1: DATA / "single" / "ts_jpegls_lossless_siemens_mr.dcm",  # JPEG-LS, 384 × 384 (pydicom)
                    2: DATA / "single" / "ts_jpegls_lossless_siemens_mr.dcm",  # the same, as a cube frame
                    3: DATA / "single" / "rle_rgb_sc.dcm",  # RLE, 100 × 100 RGB, 8 bits (pydicom)
                    # decoded as a cube frame is, from a view of the stored value (framedecode.encapsulated_frame):
                    4: DATA / "single" / "ts_j2k_lossless_siemens_mr.dcm",  # J2K, 384 × 384, 16 bits
                    5: DATA / "single" / "ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm",  # JPEG Lossless SV1
                    6: DATA / "single" / "htj2k_lossless_rgb_sc.dcm",  # HTJ2K, RGB
                    7: DATA / "single" / "jpeg_baseline_rgb_dcmtk_sc.dcm"}  # JPEG Baseline, RGB


def singles() -> list[Path]:
    return [DATA / "single" / n for n in SMALL if (DATA / "single" / n).exists()]


def build(target: str, folder: Path) -> Path:
    """Write the seed corpus of ``target`` into ``folder`` (once) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return folder
    files = singles() + sorted((DATA / "malformed").iterdir())
    if target == "cube":
        import cubepacs

        for k, (path, codec) in enumerate(zip(singles()[:8] * 2, ["htj2k", "jpegls", "jxl", "blosc2"] * 4,
                                              strict=False)):
            try:
                image = cubepacs.load_from_dicom_folder([path])
            except Exception:
                continue
            out = folder / f"{k:02d}-{path.stem}-{codec}.dcbs"
            cubepacs.save(image, out, codec=codec)
    elif target in ("dicom", "lake"):
        for path in files:
            (folder / path.name).write_bytes(path.read_bytes())
        if target == "lake":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in singles()[:3]:
                    zf.write(path, f"dir/{path.name}")
                inner = io.BytesIO()
                with zipfile.ZipFile(inner, "w") as z2:
                    z2.write(singles()[0], "inner.dcm")
                zf.writestr("nested.zip", inner.getvalue())
            (folder / "archive.zip").write_bytes(buf.getvalue())
    elif target == "codestream":  # first byte: the path (CODESTREAM_SEEDS), then a real file's first frame
        import pydicom
        from pydicom.encaps import get_frame

        for path, seed in CODESTREAM_SEEDS.items():
            frame = bytes(get_frame(pydicom.dcmread(seed).PixelData, 0, number_of_frames=1))
            (folder / f"{path}-{seed.stem}").write_bytes(bytes([path]) + frame)
    elif target == "stow":
        from cubepacs.archive.web import multipart

        body, ctype = multipart.encode([p.read_bytes()[:2048] for p in singles()[:3]], "application/dicom")
        (folder / "two-parts").write_bytes(ctype.encode() + b"\n" + body)
        (folder / "frames").write_bytes(b"1,2,3")
    return folder
