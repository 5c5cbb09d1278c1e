"""The server harness: DICOM mutants sent by STOW to a real archive, read back through every WADO route, compacted,
read back again — each mutant in a series with a good twin (the same real file, new UIDs), whose answers must not
change when the series is compacted.

``python fuzz/server.py [--minutes M | --mutants N] [--batch B] [--series S] [--seed X] [--dimse]``. The archive
runs in this process, built as ``cubepacs serve`` builds it (``load_settings``, ``open_backends``,
``service.web_app``, the ``Indexer`` and the ``WebWorker`` with the settings' codec): requests are ASGI calls into
the same application uvicorn serves (httpx's ASGI transport: routing, middlewares, authentication, access log and
handlers as a socket request takes them; an exception escaping the application is the 500 uvicorn would answer),
the indexer takes the queue's events after each STOW, and compaction is the web worker's pass, run once every S
series. One archive serves the whole run. Per round: S series, each of B mutants of real files of ../shared/data
and their twins, one STOW each (with ``--dimse``, every other series' mutants go by C-STORE to the archive's
DIMSE SCP on a free 127.0.0.1 port, their bytes as they are, and the twins by STOW); every route of each instance;
one compaction pass over the S series; every route again.

Findings: a 5xx, a route taking more than 2 s of CPU (the process' CPU time: the campaign runs at the lowest
priority on a shared core, where wall time measures the neighbours), a twin whose answer changed after compaction
(a poisoned series), a series left without a cube, a log record carrying a traceback, a traceback or a Rust panic
written to stderr by anything in the process (file descriptor 2 goes to a file the harness reads); each is written to
fuzz/crashes/server/ with what was asked. The last lines are the counts (``mutants`` is the executions).

Mutations (``mutate``): a pixel attribute set to an odd value (Bits Allocated, Rows, Samples per Pixel, Number of
Frames, …), bytes of the first encapsulated fragment changed, bytes after the file meta changed, the file cut
short, the Specific Character Set given another VR.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
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


async def _get(client: Any, url: str, headers: dict[str, str]) -> tuple[int, bytes, str, float, float]:
    t0, c0 = time.monotonic(), time.process_time()
    r = await client.get(url, headers=headers)
    return (r.status_code, r.content, r.headers.get("content-type", ""), time.monotonic() - t0,
            time.process_time() - c0)


async def routes(client: Any, headers: dict[str, str], uids: tuple[str, str, str]) -> dict[str, Any]:
    """Every route of one instance: {route: (status, frame digest, wall seconds, CPU seconds)}."""
    import hashlib

    from cubepacs.archive.web import multipart

    url = f"/dicom-web/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
    out = {}
    for route in ROUTES:
        variants = [("", {})] + ([(ts, {"Accept": f'multipart/related; type="application/dicom"; '
                                          f"transfer-syntax={ts}"}) for ts in SYNTAXES] if route == "" else [])
        for ts, accept in variants:
            status, body, ctype, wall, cpu = await _get(client, url + route, {**headers, **accept})
            digest = ""
            if route == "/frames/1" and status == 200:  # the frame's values (the boundary differs every time)
                digest = hashlib.sha256(b"".join(multipart.parse(body, ctype))).hexdigest()
            out[f"{route}|{ts}"] = (status, digest, wall, cpu)
    return out


class Archive:
    """One archive in this process, assembled as ``cubepacs serve`` assembles it, over a data folder in ``root``."""

    def __init__(self, root: Path, dimse: bool) -> None:
        from cubepacs.archive.services.indexer import Indexer
        from cubepacs.archive.services.service import open_backends, web_app
        from cubepacs.archive.services.webworker import WebWorker
        from cubepacs.archive.settings import ensure_api_key, load_settings
        from tests.archive.conftest import KEYS, free_port

        self.key = KEYS["alpha"]
        settings, _ = ensure_api_key(load_settings(overrides={
            "data_dir": str(root / "data"), "api_keys": {self.key: "alpha"}, "ae_tenants": {"CUBEPACS": "alpha"},
            "dimse_port": free_port(), "log_tables": False}))
        self.settings = settings
        self.backends = b = open_backends(settings, "memory://")  # serve's in-process cache, as indexer + web run
        self.app, self.access = web_app(settings, b)
        self.indexer = Indexer(b.queue, b.index, cache=b.cache)
        self.worker = WebWorker(b.index, b.storage, 0.0, settings.max_retries, settings.codec, settings.compact,
                                max_value_bytes=settings.max_value_bytes)
        self.scp = None
        if dimse:
            from cubepacs.archive.dimse.scp import start_from_settings

            self.scp = start_from_settings(settings, b.storage, b.queue, b.index)

    def index(self) -> None:
        """Index every event waiting in the queue (what the indexer thread does, now)."""
        self.indexer.run_once()
        while self.indexer.polled:
            self.indexer.run_once()

    def cube(self, study: str, series: str) -> bool:
        """Whether the series has a published cube."""
        from cubepacs.archive.keys import cube_key

        return bool(self.backends.storage.exists(cube_key("alpha", study, series)))

    def close(self) -> None:
        from cubepacs.archive.observability.accesslog import close_logs

        if self.scp is not None:
            self.scp.shutdown()
        close_logs([self.access])
        self.backends.queue.close()
        self.backends.index.close()


class Stderr:
    """File descriptor 2 sent to ``path`` (native code writes there, past Python's logging) and read back."""

    def __init__(self, path: Path) -> None:
        import os

        sys.stderr.flush()
        self.saved = os.dup(2)
        self.file = open(path, "w+b")
        os.dup2(self.file.fileno(), 2)
        self.read_at = 0

    def new_lines(self) -> list[str]:
        """The lines written since the last call."""
        sys.stderr.flush()
        self.file.seek(self.read_at)
        data = self.file.read()
        self.read_at += len(data)
        return data.decode(errors="replace").splitlines()

    def restore(self) -> None:
        import os

        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.close()


class Tracebacks(logging.Handler):
    """Counts log records that carry a traceback (the archive promises one line per failure)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or (record.exc_text or "") or "Traceback (most recent call last)" in record.getMessage():
            self.records.append(f"{record.name}: {record.getMessage()[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=0)
    parser.add_argument("--mutants", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8, help="mutants per series (each with its twin)")
    parser.add_argument("--series", type=int, default=4, help="series per compaction pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dimse", action="store_true", help="every other series' mutants by C-STORE")
    args = parser.parse_args()
    asyncio.run(campaign(args))


async def campaign(args: argparse.Namespace) -> None:
    """The loop of :func:`main`."""
    import resource
    import shutil
    import tempfile
    import traceback

    import httpx
    from pydicom.uid import generate_uid

    from cubepacs.archive.ingest import describe
    from cubepacs.archive.web import multipart

    warnings.filterwarnings("ignore")
    crashes = HERE / "crashes" / "server"
    crashes.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="cubepacs-fuzz-server-"))
    logging.basicConfig(filename=str(root / "archive.log"), level=logging.WARNING)
    stderr = Stderr(root / "stderr.log")  # what native code writes there (a Rust panic's message) is seen too
    tracebacks = Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    archive = Archive(root, args.dimse)
    escaped: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:  # what escapes is uvicorn's 500; keep its text
        try:
            await archive.app(scope, receive, send)
        except Exception:
            escaped.append(traceback.format_exc()[-2000:])
            raise

    headers = {"Authorization": f"Bearer {archive.key}"}
    counts = {"rounds": 0, "batches": 0, "mutants": 0, "twins": 0, "c_store": 0, "stored": 0, "requests": 0,
              "5xx": 0, "slow": 0, "poisoned": 0, "not_compacted": 0, "tracebacks": 0}
    slowest = {"cpu_s": 0.0, "wall_s": 0.0}
    route_cpu: dict[str, float] = {}  # CPU seconds spent per route, all instances
    started = time.monotonic()
    deadline = started + args.minutes * 60 if args.minutes else float("inf")

    def finding(kind: str, detail: dict[str, Any], data: bytes) -> None:
        name = f"{kind}-{counts['mutants']}-{int(time.time())}"
        (crashes / f"{name}.dcm").write_bytes(data)
        (crashes / f"{name}.json").write_text(json.dumps(detail, indent=1))
        print("FINDING", kind, json.dumps(detail)[:400], flush=True)

    def status() -> str:
        elapsed = time.monotonic() - started
        return json.dumps({**counts, "slowest_cpu_s": round(slowest["cpu_s"], 3),
                           "slowest_wall_s": round(slowest["wall_s"], 3), "seconds": round(elapsed),
                           "mutants_per_s": round(counts["mutants"] / max(elapsed, 1e-9), 2),
                           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024})

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("127.0.0.1", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=120) as client:
            while time.monotonic() < deadline and (not args.mutants or counts["mutants"] < args.mutants):
                stored: dict[tuple[str, str], tuple[bytes, str, tuple[str, str, str]]] = {}
                series_of_round = []
                for _ in range(args.series):
                    study, series = generate_uid(), generate_uid()
                    series_of_round.append((study, series))
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
                    counts["twins"] += sum(1 for k, _, _ in batch if k == "twin")
                    if archive.scp is not None and counts["batches"] % 2:  # mutants by C-STORE, twins by STOW
                        statuses = c_store(archive.settings.dimse_port, [d for k, d, _ in batch if k == "mutant"],
                                           root)
                        counts["c_store"] += sum(s is not None for s in statuses)
                        sent = [d for k, d, _ in batch if k == "twin"]
                    else:
                        sent = [d for _, d, _ in batch]
                    counts["batches"] += 1
                    body, ctype = multipart.encode(sent, "application/dicom")
                    r = await client.post("/dicom-web/studies", content=body,
                                          headers={**headers, "Content-Type": ctype})
                    counts["requests"] += 1
                    if r.status_code >= 500:
                        counts["5xx"] += 1
                        finding("stow-5xx", {"status": r.status_code, "body": r.text[:500],
                                             "escaped": escaped[-1:]}, body)
                    for kind, data, what in batch:
                        try:
                            ev = describe(data)
                        except Exception:
                            continue
                        stored[(kind, ev["sop_uid"])] = (data, what,
                                                         (ev["study_uid"], ev["series_uid"], ev["sop_uid"]))
                archive.index()
                before = {k: await routes(client, headers, v[2]) for k, v in stored.items()}
                counts["stored"] += len(stored)
                archive.worker.run_once()  # the web worker's pass: every series of the round is due
                for study, series in series_of_round:
                    if not archive.cube(study, series):
                        counts["not_compacted"] += 1
                        finding("not-compacted", {"series": series}, b"")
                after = {k: await routes(client, headers, v[2]) for k, v in stored.items()}
                counts["rounds"] += 1
                for key, answers in list(before.items()) + list(after.items()):
                    for route, (code, _, wall, cpu) in answers.items():
                        counts["requests"] += 1
                        slowest["cpu_s"], slowest["wall_s"] = max(slowest["cpu_s"], cpu), max(slowest["wall_s"], wall)
                        route_cpu[route] = route_cpu.get(route, 0.0) + cpu
                        if code >= 500:
                            counts["5xx"] += 1
                            finding("5xx", {"route": route, "status": code, "what": stored[key][1],
                                            "escaped": escaped[-1:]}, stored[key][0])
                        if cpu > SLOW:
                            counts["slow"] += 1
                            finding("slow", {"route": route, "cpu_seconds": cpu, "wall_seconds": wall,
                                             "what": stored[key][1]}, stored[key][0])
                for key, answers in before.items():
                    if key[0] == "twin" and any(after[key][route][:2] != a[:2] for route, a in answers.items()):
                        counts["poisoned"] += 1
                        changed = {route: (a[0], after[key][route][0]) for route, a in answers.items()
                                   if after[key][route][:2] != a[:2]}
                        finding("poisoned", {"changed": changed, "series": [v[1] for v in stored.values()]},
                                stored[key][0])
                for line in stderr.new_lines():
                    if "panicked" in line or "Traceback" in line or "Exception in thread" in line:
                        tracebacks.records.append(f"stderr: {line[:300]}")
                if len(tracebacks.records) > counts["tracebacks"]:
                    finding("traceback", {"records": tracebacks.records[counts["tracebacks"]:][:20]}, b"")
                    counts["tracebacks"] = len(tracebacks.records)
                print(status(), flush=True)
    finally:
        archive.close()
        stderr.restore()
        shutil.rmtree(root, ignore_errors=True)
    print("cpu per route:", json.dumps({k: round(v, 1) for k, v in sorted(route_cpu.items())}))
    print("done:", status())


if __name__ == "__main__":
    main()
