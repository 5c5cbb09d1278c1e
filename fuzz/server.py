"""The server harness: DICOM mutants sent by STOW to a real archive, read back through every WADO route, compacted,
read back again — each mutant in a series with a good twin (the same real file, new UIDs), whose answers must not
change when the series is compacted.

``python fuzz/server.py [--minutes M | --mutants N] [--batch B] [--seed S] [--dimse]``. Starts ``cubepacs serve``
on free 127.0.0.1 ports (quiet series compacted after 1 s), then per batch: B mutants of real files of
../shared/data and their twins in one new series, one STOW (with ``--dimse``, every other batch's mutants go by
C-STORE, their bytes as they are, and the twins by STOW); every route of each instance; the series' cube awaited;
every route again. Findings: a 5xx, a route slower than 2 s, a twin whose answer changed after compaction (a
poisoned series), the server gone; each is written to fuzz/crashes/server/ with what was asked. The last lines
are the counts.

Mutations (``mutate``): a pixel attribute set to an odd value (Bits Allocated, Rows, Samples per Pixel, Number of
Frames, …), bytes of the first encapsulated fragment changed, bytes after the file meta changed, the file cut
short, the Specific Character Set given another VR.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import mutants  # noqa: E402

SEEDS = [mutants.SINGLE / n for n in ("ct_ge_small_signed.dcm", "ts_rle_siemens_mr.dcm", "rle_rgb_sc.dcm",
                                      "ts_jpegls_lossless_siemens_mr.dcm", "ts_j2k_lossless_siemens_mr.dcm",
                                      "jpeg_baseline_rgb_dcmtk_sc.dcm", "seg_1bit_liver.dcm",
                                      "ts_explicit_be_siemens_mr.dcm", "htj2k_lossless_rgb_sc.dcm")]
ROUTES = ("", "/metadata", "/frames/1", "/rendered", "/thumbnail", "/frames/1/rendered")
SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "*")
ATTRS = ("BitsAllocated", "BitsStored", "HighBit", "Rows", "Columns", "SamplesPerPixel", "NumberOfFrames",
         "PixelRepresentation", "PlanarConfiguration")
ODD = (0, 1, 2, 3, 7, 12, 17, 24, 31, 33, 48, 64, 255, 4096, 65535)
SLOW = 2.0


def mutate(seed: Path, study: str, series: str, rng: random.Random) -> tuple[bytes, str]:
    """A mutant of ``seed`` in ``study``/``series``, and what was changed."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    data = mutants.renamed(seed, study, series)
    kind = rng.randrange(5)
    if kind == 0:
        ds = pydicom.dcmread(io.BytesIO(data))
        attr, value = rng.choice(ATTRS), rng.choice(ODD)
        setattr(ds, attr, value)
        return mutants._save(ds), f"{attr}={value}"
    if kind == 1:
        ds = pydicom.dcmread(io.BytesIO(data))
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            frames = [bytearray(f) for f in generate_frames(ds.PixelData, number_of_frames=int(
                ds.get("NumberOfFrames", 1) or 1))]
            frame = frames[0]
            for _ in range(rng.choice((1, 2, 4, 16))):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            ds.PixelData = encapsulate([bytes(f) for f in frames])
            return mutants._save(ds), "fragment bytes"
    if kind in (1, 2):
        out = bytearray(data)
        start = 132 + 12 + int.from_bytes(data[140:144], "little")
        for _ in range(rng.choice((1, 2, 8))):
            out[rng.randrange(start, len(out))] = rng.randrange(256)
        return bytes(out), "dataset bytes"
    if kind == 3:
        return data[:rng.randrange(200, len(data))], "truncated"
    return mutants.bad_charset(seed, study, series) if seed.name.startswith("ct_") else data, "charset VR"


def c_store(port: int, datas: list[bytes], folder: Path) -> list[int | None]:
    """Send each file by C-STORE (its bytes as they are: pynetdicom's chunked sending) on one association; the
    statuses (None: not sendable — no readable file meta — or the association refused)."""
    from pynetdicom import AE, _config

    from cubepacs.archive.web.stow import _uids_of

    paths, contexts = [], set()
    for k, data in enumerate(datas):
        sop_class, _, implicit = _uids_of(data)
        path = folder / f"{k}.dcm"
        path.write_bytes(data)
        syntax = ""
        try:
            import pydicom

            syntax = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta.TransferSyntaxUID)
        except Exception:
            pass
        paths.append(path if sop_class and syntax and implicit is None else None)
        if paths[-1] is not None:
            contexts.add((sop_class, syntax))
    ae = AE(ae_title="FUZZ")
    for sop_class, syntax in sorted(contexts)[:128]:
        ae.add_requested_context(sop_class, syntax)
    statuses: list[int | None] = [None] * len(datas)
    if not contexts:
        return statuses
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes, not pydicom's re-encoding of them
    assoc = ae.associate("127.0.0.1", port, ae_title="CUBEPACS")
    try:
        if assoc.is_established:
            for k, path in enumerate(paths):
                if path is None:
                    continue
                try:
                    status = assoc.send_c_store(path)
                    statuses[k] = int(status.Status) if status else None
                except Exception:
                    statuses[k] = None
    finally:
        if assoc.is_established:
            assoc.release()
        _config.STORE_SEND_CHUNKED_DATASET = False
    return statuses


def _get(client: Any, url: str, headers: dict[str, str], ctype: list[str]) -> tuple[int, bytes, float]:
    t0 = time.monotonic()
    r = client.get(url, headers=headers)
    ctype[:] = [r.headers.get("content-type", "")]
    return r.status_code, r.content, time.monotonic() - t0


def routes(client: Any, base: str, headers: dict[str, str], uids: tuple[str, str, str]) -> dict[str, Any]:
    """Every route of one instance: {route: (status, body digest, seconds)}."""
    import hashlib

    from cubepacs.archive.web import multipart

    url = f"{base}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
    out = {}
    for route in ROUTES:
        variants = [("", {})] + ([(ts, {"Accept": f'multipart/related; type="application/dicom"; '
                                          f"transfer-syntax={ts}"}) for ts in SYNTAXES] if route == "" else [])
        for ts, accept in variants:
            ctype: list[str] = []
            status, body, secs = _get(client, url + route, {**headers, **accept}, ctype)
            digest = ""
            if route == "/frames/1" and status == 200:  # the frame's values (the boundary differs every time)
                digest = hashlib.sha256(b"".join(multipart.parse(body, ctype[0]))).hexdigest()
            out[f"{route}|{ts}"] = (status, digest, secs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=0)
    parser.add_argument("--mutants", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dimse", action="store_true", help="every other batch's mutants by C-STORE")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import tempfile

    import httpx
    from pydicom.uid import generate_uid

    from cubepacs.archive.ingest import describe
    from cubepacs.archive.web import multipart
    from tests.archive.conftest import Server, start_server, stop_server

    crashes = HERE / "crashes" / "server"
    crashes.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="cubepacs-fuzz-server-"))
    server: Server = start_server(root / "data")
    headers = server.headers()
    counts = {"batches": 0, "mutants": 0, "c_store": 0, "stored": 0, "requests": 0, "5xx": 0, "slow": 0,
              "poisoned": 0, "not_compacted": 0}
    slowest = 0.0
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else float("inf")

    def finding(kind: str, detail: dict[str, Any], data: bytes) -> None:
        name = f"{kind}-{counts['mutants']}-{int(time.time())}"
        (crashes / f"{name}.dcm").write_bytes(data)
        (crashes / f"{name}.json").write_text(json.dumps(detail, indent=1))
        print("FINDING", kind, json.dumps(detail)[:400], flush=True)

    try:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < deadline and (not args.mutants or counts["mutants"] < args.mutants):
                study, series = generate_uid(), generate_uid()
                batch = []
                for _ in range(args.batch):
                    seed = rng.choice(SEEDS)
                    try:
                        data, what = mutate(seed, study, series, rng)
                    except Exception:
                        continue
                    batch.append(("mutant", data, what))
                    batch.append(("twin", mutants.renamed(seed, study, series), seed.name))
                counts["mutants"] += sum(1 for k, _, _ in batch if k == "mutant")
                if args.dimse and counts["batches"] % 2:  # every other batch by C-STORE, its twins by STOW
                    statuses = c_store(server.dimse_port, [d for k, d, _ in batch if k == "mutant"], root)
                    counts["c_store"] += sum(s is not None for s in statuses)
                    if server.proc.poll() is not None:
                        finding("server-died", {"after": "C-STORE"}, b"")
                        break
                    sent = [(k, d) for k, d, _ in batch if k == "twin"]
                else:
                    sent = [(k, d) for k, d, _ in batch]
                counts["batches"] += 1
                body, ctype = multipart.encode([d for _, d in sent], "application/dicom")
                r = client.post(f"{server.url}/studies", content=body, headers={**headers, "Content-Type": ctype},
                                timeout=120)
                counts["requests"] += 1
                if r.status_code >= 500:
                    counts["5xx"] += 1
                    finding("stow-5xx", {"status": r.status_code, "body": r.text[:500]}, body)
                    continue
                stored = {}
                for kind, data, what in batch:
                    try:
                        ev = describe(data)
                    except Exception:
                        continue
                    stored[(kind, ev["sop_uid"])] = (data, what, (ev["study_uid"], ev["series_uid"], ev["sop_uid"]))
                time.sleep(0.5)  # indexed (STOW answers once stored and queued)
                before = {k: routes(client, server.url, headers, v[2]) for k, v in stored.items()}
                counts["stored"] += len(stored)
                cube = server.data_dir / "storage" / "alpha" / study / f"{series}.dcbs"
                waited = time.monotonic()
                while not cube.exists() and time.monotonic() - waited < 30:
                    time.sleep(0.5)
                if not cube.exists():
                    counts["not_compacted"] += 1
                after = {k: routes(client, server.url, headers, v[2]) for k, v in stored.items()}
                for key, answers in list(before.items()) + list(after.items()):
                    for route, (status, _, secs) in answers.items():
                        counts["requests"] += 1
                        slowest = max(slowest, secs)
                        if status >= 500:
                            counts["5xx"] += 1
                            finding("5xx", {"route": route, "status": status, "what": stored[key][1]},
                                    stored[key][0])
                        if secs > SLOW:
                            counts["slow"] += 1
                            finding("slow", {"route": route, "seconds": secs, "what": stored[key][1]},
                                    stored[key][0])
                for key, answers in before.items():
                    if key[0] == "twin" and any(after[key][route][:2] != a[:2] for route, a in answers.items()):
                        counts["poisoned"] += 1
                        changed = {route: (a[0], after[key][route][0]) for route, a in answers.items()
                                   if after[key][route][:2] != a[:2]}
                        finding("poisoned", {"changed": changed, "series": [v[1] for v in stored.values()]},
                                stored[key][0])
                print(json.dumps({**counts, "slowest_s": round(slowest, 3)}), flush=True)
    finally:
        stop_server(server)
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print("done:", json.dumps({**counts, "slowest_s": round(slowest, 3)}))


if __name__ == "__main__":
    main()
