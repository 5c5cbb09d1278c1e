"""Benchmark the archive against Orthanc (apt: orthanc, orthanc-dicomweb), same run, same data, same machine.

Usage (root): .venv/bin/python bench/archive.py [--copies 10] [--studies 10000] [--streams 4]

Orthanc 1.10 cannot bind 127.0.0.1 only, so the whole benchmark re-runs itself inside a private network
namespace (``unshare -n``) holding only ``lo``; nothing it starts is reachable from outside. Both servers get
``TCP_NODELAY=1`` (Orthanc reads it from its environment, as DCMTK does) and no HTTP compression is asked of
either. HTTP requests are timed with the standard library's http.client on one keep-alive connection per
measurement, for both servers (one frame also with httpx); the retrieval requests of the two servers are timed in
alternating blocks, so that both see the machine at the same speed. Ingest at 1/4/16/32 associations with CPU per
instance is bench/ingest.py.

Measured:
  1. C-STORE ingest: DCMTK storescu, ``--streams`` concurrent associations, all series of ../shared/data
     → instances per second, cubepacs / Orthanc (both servers warmed first by 8 untimed instances).
  2. /metadata of a 1000-instance series (a real series replicated with new UIDs — synthetic by necessity:
     no real series that long is in the data set) → median and p95, Orthanc / cubepacs.
  3. QIDO study search over ``--studies`` studies (index rows made from real headers with new UIDs) → p95.
  4. Retrieval: one frame of a CT slice asked repeatedly (stored file; cube after compaction; JPEG-lossless made
     by DCMTK's dcmcjpeg), one frame of each instance of a CT series asked once (what a viewer opening the series
     does: nothing of it is hot in our server; and the 3D T1 series the same way with OHIF's Accept header,
     ``transfer-syntax=*``, which lets each server send a frame as it keeps it), the first series /metadata
     before compaction, warm study /metadata — p50/p95 for both.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx
import pydicom
from _common import memory_mb, wait_http  # bench/_common.py
from _settle import cleanup, settle  # bench/_settle.py (this folder is on sys.path when run as a script)
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "series"
sys.path.insert(0, str(ROOT))


def inside_namespace() -> bool:
    return os.environ.get("CUBEPACS_BENCH_NETNS") == "1"


def series_files() -> list[Path]:
    return sorted(p for d in DATA.iterdir() for p in d.iterdir()
                  if p.is_file() and p.suffix != ".txt" and p.name != "DIRFILE")


def store(port: int, aet: str, files: list[Path], streams: int, *options: str) -> float:
    """Send ``files`` with ``streams`` concurrent storescu processes; return instances per second."""
    chunks = [files[i::streams] for i in range(streams)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", *options, "-aec", aet, "127.0.0.1", str(port), *map(str, c)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in chunks if c]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[:500]}")
    return len(files) / (time.perf_counter() - start)


def replicate_series(src: Path, n: int, out: Path) -> tuple[str, str]:
    """``n`` instances from the files of ``src`` with new SOP/Series UIDs in one series; (study, series)."""
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix != ".txt" and p.name != "DIRFILE")
    series_uid = generate_uid()
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ds = pydicom.dcmread(files[i % len(files)])
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.save_as(out / f"{i:05d}.dcm")
    return study_uid, series_uid


def request_times(url: str, headers: dict[str, str], n: int, client: str = "stdlib") -> list[float]:
    """Seconds of each of ``n`` GETs of ``url`` over one keep-alive connection (see ``get_times``)."""
    return get_times([url] * n, headers, client)


def get_times(urls: list[str], headers: dict[str, str], client: str = "stdlib") -> list[float]:
    """Seconds of a GET of each of ``urls`` (one server) over one keep-alive connection, the same for both servers.

    The client is the standard library's ``http.client`` unless ``client="httpx"``: httpx spends ≈ 1.5 ms of
    client CPU reading a 512 KB frame — as much as either server takes to send it — which hides the servers'
    difference; the frame is timed with httpx too, for comparison with earlier runs."""
    headers = {"Accept-Encoding": "identity", **headers}  # no gzip on either side (Orthanc compresses when asked)
    times = []
    if client == "httpx":
        with httpx.Client(timeout=60) as hc:
            for url in urls:
                t = time.perf_counter()
                hc.get(url, headers=headers).raise_for_status()
                times.append(time.perf_counter() - t)
        return times
    first = urllib.parse.urlsplit(urls[0])
    conn = http.client.HTTPConnection(first.hostname or "127.0.0.1", first.port, timeout=60)
    try:
        for url in urls:
            parts = urllib.parse.urlsplit(url)
            t = time.perf_counter()
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
            r = conn.getresponse()
            r.read()
            times.append(time.perf_counter() - t)
            if r.status >= 400:
                raise RuntimeError(f"GET {url}: HTTP {r.status}")
    finally:
        conn.close()
    return times


def summary(times: list[float]) -> tuple[float, float]:
    """Median and p95."""
    times = sorted(times)
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def timings(url: str, headers: dict[str, str], n: int, client: str = "stdlib") -> tuple[float, float]:
    """Median and p95 seconds of ``n`` GETs of ``url`` (see ``request_times``)."""
    return summary(request_times(url, headers, n, client))


def interleaved(requests: dict[str, tuple[str, dict[str, str]]], n: int, client: str = "stdlib",
                rounds: int = 10) -> dict[str, tuple[float, float]]:
    """Median and p95 of ``n`` GETs for each name's (url, headers), taken in ``rounds`` alternating blocks, so that
    both servers see the same machine (its speed drifts by tens of percent over a minute here); one untimed
    request each first."""
    times: dict[str, list[float]] = {name: [] for name in requests}
    for url, headers in requests.values():
        request_times(url, headers, 1, client)
    for _ in range(rounds):
        for name, (url, headers) in requests.items():
            times[name] += request_times(url, headers, max(1, n // rounds), client)
    return {name: summary(t) for name, t in times.items()}


FRAME_ACCEPT = {"Accept": 'multipart/related; type="application/octet-stream"'}
# what OHIF 3.13 asks for: any transfer syntax (each server then sends a frame as it keeps it, if it can)
VIEWER_ACCEPT = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}


def retrieval_files(out: Path) -> dict[str, Path]:
    """One CT slice stored uncompressed and the same slice JPEG-lossless (DCMTK's dcmcjpeg, process 14 SV1),
    each in a new study (new UIDs: made from the real series, synthetic only in their UIDs)."""
    src = sorted((DATA / "ct_ge_lightspeedvct_chest_100sl").iterdir())[0]
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for name in ("plain", "jpegll"):
        ds = pydicom.dcmread(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(out / f"{name}.dcm")
        made[name] = out / f"{name}.dcm"
    subprocess.run(["dcmcjpeg", "+e1", str(made["jpegll"]), str(out / "jpegll-c.dcm")], check=True)
    made["jpegll"] = out / "jpegll-c.dcm"
    return made


def frame_url(base: str, f: Path) -> str:
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    return (f"{base}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}/frames/1")


def retrieval(auth: dict[str, str], tmp: Path, data_dir: Path, repeat: int) -> dict[str, float]:
    """Frames (before and after compaction; JPEG-lossless) and warm study /metadata, Orthanc and cubepacs, same
    requests, timed alternately (``interleaved``)."""
    out: dict[str, float] = {}
    files = retrieval_files(tmp / "retrieval")
    ct = sorted((DATA / "ct_ge_lightspeedvct_chest_100sl").iterdir())
    ct_meta = pydicom.dcmread(ct[0], stop_before_pixels=True)
    study_meta = f"/dicom-web/studies/{ct_meta.StudyInstanceUID}/metadata"
    servers = {"orthanc": ("http://127.0.0.1:8043", {}), "cubepacs": ("http://127.0.0.1:8042", auth)}
    for port, aet in ((4242, "ORTHANC"), (11112, "CUBEPACS")):
        # not compacted before quiet_seconds (30) have passed: their frames come from the stored files
        store(port, aet, [files["plain"]], 1)
        store(port, aet, [files["jpegll"]], 1, "-xs")  # proposed (and kept) as JPEG lossless
    for (base, headers), f in ((srv, f) for srv in servers.values() for f in files.values()):
        deadline = time.monotonic() + 60  # stored is not yet indexed: wait until each server finds the instance
        while httpx.get(frame_url(base, f), headers={**headers, **FRAME_ACCEPT}).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(frame_url(base, f))
            time.sleep(0.1)
    for kind, f in files.items():
        got = interleaved({name: (frame_url(base, f), {**headers, **FRAME_ACCEPT})
                           for name, (base, headers) in servers.items()}, repeat)
        for name, (median, p95) in got.items():
            out[f"{name}_frame_{kind}_median"], out[f"{name}_frame_{kind}_p95"] = median, p95
    got = interleaved({name: (frame_url(base, files["plain"]), {**headers, **FRAME_ACCEPT})
                       for name, (base, headers) in servers.items()}, repeat, client="httpx")
    for name, (median, p95) in got.items():
        out[f"{name}_frame_httpx_median"], out[f"{name}_frame_httpx_p95"] = median, p95
    # a viewer opening a series: one frame of each instance, each asked once, in display order (instance number,
    # as viewers sort) — then the 54 slices of the other CT series in a shuffled order, which no read-ahead helps;
    # each in alternating halves; both series are cubes on our side by now, nothing of them hot
    def instances(folder: str) -> list[Path]:
        found = [f for f in (DATA / folder).iterdir() if f.suffix != ".txt" and f.name != "DIRFILE"]
        return sorted(found, key=lambda f: int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber))

    philips = instances("ct_philips_ingenuity_tilt_54sl")
    shuffled = random.Random(13).sample(philips, k=len(philips))
    for kind, order, accept in (("first", instances("ct_ge_lightspeedvct_chest_100sl"), FRAME_ACCEPT),
                                ("random", shuffled, FRAME_ACCEPT),
                                ("viewer", instances("mr_ge_signa_3dt1_100sl"), VIEWER_ACCEPT)):
        first: dict[str, list[float]] = {name: [] for name in servers}
        for half in (order[: len(order) // 2], order[len(order) // 2:]):
            for name, (base, headers) in servers.items():
                first[name] += get_times([frame_url(base, f) for f in half], {**headers, **accept})
        for name, times in first.items():
            out[f"{name}_frame_{kind}_median"], out[f"{name}_frame_{kind}_p95"] = summary(times)
    got = interleaved({name: (base + study_meta, headers) for name, (base, headers) in servers.items()},
                      max(10, repeat // 5))
    for name, (median, p95) in got.items():
        out[f"{name}_study_meta_median"], out[f"{name}_study_meta_p95"] = median, p95
    plain = pydicom.dcmread(files["plain"], stop_before_pixels=True)
    deadline = time.monotonic() + 180  # our web worker compacts the plain slice's series into a cube
    while time.monotonic() < deadline and not list((data_dir / "storage" / "default" /
                                                    str(plain.StudyInstanceUID)).glob("*.dcbs")):
        time.sleep(0.5)
    # "after compaction": every series built, so that neither server is timed while the other's (or its own)
    # background work runs — Orthanc has none by then
    while time.monotonic() < deadline and pending_series(data_dir) > 0:
        time.sleep(0.5)
    got = interleaved({name: (frame_url(base, files["plain"]), {**headers, **FRAME_ACCEPT})
                       for name, (base, headers) in servers.items()}, repeat)
    out["cubepacs_frame_cube_median"], out["cubepacs_frame_cube_p95"] = got["cubepacs"]
    out["orthanc_frame_cube_median"], out["orthanc_frame_cube_p95"] = got["orthanc"]  # its file, same moment
    return out


def pending_series(data_dir: Path) -> int:
    """Series our web worker has not built yet (read from the embedded index, read-only)."""
    import sqlite3

    with sqlite3.connect(f"file:{data_dir / 'index.db'}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT count(*) FROM dicom_json_meta WHERE json_status = 0").fetchone()[0])


def varying(headers: dict[str, str], n: int) -> tuple[float, float]:
    """QIDO with a different PatientID prefix each time: every answer misses the cache."""
    return summary(get_times(["http://127.0.0.1:8042/dicom-web/studies?" +
                              urllib.parse.urlencode({"PatientID": f"P{k:04d}*", "limit": 50}) for k in range(n)],
                             headers))


def fill_index(index_url: str, studies: int) -> None:
    """Index ``studies`` studies built from real headers with new UIDs (one instance each)."""
    from cubepacs.archive.index.store import Index

    idx = Index.from_url(index_url)
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in series_files()[::40]]
    for k in range(studies):
        ds = heads[k % len(heads)]
        study = f"1.2.826.0.1.3680043.10.9999.{k}"
        idx.add_instance({"tenant": "default", "study_uid": study, "series_uid": study + ".1",
                          "sop_uid": study + ".1.1", "key": f"default/{study}/x.dcm",
                          "attrs": {"PatientID": f"P{k % 2000:05d}", "PatientName": str(ds.get("PatientName", "")),
                                    "StudyDate": f"20{10 + k % 15:02d}0{1 + k % 9}15", "Modality": ds.Modality}})
    from sqlalchemy import update

    from cubepacs.archive.index.models import dicom_json_meta

    with idx.engine.begin() as conn:  # index-only rows: nothing for the web worker to build
        conn.execute(update(dicom_json_meta).values(json_status=1))
    idx.close()


def wait_built(data_dir: Path, timeout: float = 300) -> None:
    """Until our web worker has built every series stored so far (it starts ``quiet_seconds`` after a series'
    last instance, in a builder process that competes with the web for this machine's two vCPUs)."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(data_dir / "index.db", timeout=30) as conn:
            (pending,) = conn.execute("SELECT count(*) FROM dicom_json_meta WHERE json_status = 0").fetchone()
        if not pending:
            return
        time.sleep(1.0)
    raise TimeoutError("the web worker did not build the stored series in time")


def run_inside(args: argparse.Namespace) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="cubepacs-bench-"))
    results: dict[str, float] = {}
    # --- Orthanc
    ocfg = {"Name": "bench", "StorageDirectory": str(tmp / "orthanc"), "IndexDirectory": str(tmp / "orthanc"),
            "DicomAet": "ORTHANC", "DicomPort": 4242, "HttpPort": 8043, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": ["/usr/share/orthanc/plugins"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "ConcurrentJobs": 2}
    (tmp / "orthanc.json").write_text(json.dumps(ocfg))
    # Orthanc, like every DCMTK-based server, reads TCP_NODELAY from its environment: the same conditions as ours
    orthanc = subprocess.Popen(["Orthanc", str(tmp / "orthanc.json")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "TCP_NODELAY": "1"})
    # --- cubepacs (index pre-filled for the QIDO measurement)
    data_dir = tmp / "cubepacs"
    data_dir.mkdir()
    fill_index(f"sqlite:///{data_dir}/index.db", args.studies)
    key = "bench-key-0123456789"
    (tmp / "cubepacs.toml").write_text(
        f'[cubepacs]\ndata_dir = "{data_dir}"\nquiet_seconds = 30.0\napi_keys = {{ "{key}" = "default" }}\n'
        + "".join(f"{s}\n" for s in args.set))
    ours = subprocess.Popen([sys.executable, "-m", "cubepacs", "serve", "--config", str(tmp / "cubepacs.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    auth = {"Authorization": f"Bearer {key}"}
    try:
        wait_http("http://127.0.0.1:8043/system")
        wait_http("http://127.0.0.1:8042/dicom-web/studies?limit=1", auth)
        files = series_files()
        # untimed warm-up of both servers (first associations, first writes): 8 fMRI copies with new UIDs
        replicate_series(DATA / "mr_ge_mr750_epi_fmri_150img", 8, tmp / "warm")
        for port, aet in ((4242, "ORTHANC"), (11112, "CUBEPACS")):
            store(port, aet, sorted((tmp / "warm").iterdir()), args.streams)
        results["orthanc_store_ips"] = store(4242, "ORTHANC", files, args.streams)
        results["cubepacs_store_ips"] = store(11112, "CUBEPACS", files, args.streams)
        print("C-STORE instances/s:", results, file=sys.stderr)
        ct_meta = pydicom.dcmread(sorted((DATA / "ct_ge_lightspeedvct_chest_100sl").iterdir())[0],
                                  stop_before_pixels=True)
        series_meta = f"/dicom-web/studies/{ct_meta.StudyInstanceUID}/series/{ct_meta.SeriesInstanceUID}/metadata"
        ct_count = len(list((DATA / "ct_ge_lightspeedvct_chest_100sl").iterdir()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(httpx.get(
                f"http://127.0.0.1:8042/dicom-web/studies/{ct_meta.StudyInstanceUID}/series/"
                f"{ct_meta.SeriesInstanceUID}/instances", headers=auth).json()) < ct_count:
            time.sleep(0.1)  # all indexed (the lag is reported by bench/ingest.py)
        for name, base, headers in (("orthanc", "http://127.0.0.1:8043", {}),
                                    ("cubepacs", "http://127.0.0.1:8042", auth)):  # ours not built yet
            results[f"{name}_series_meta_first"] = timings(base + series_meta, headers, 1)[0]
        wait_built(data_dir)  # retrieval is timed with both servers idle (Orthanc has no background work)
        results.update(retrieval(auth, tmp, data_dir, args.repeat))
        print("retrieval:", results, file=sys.stderr)
        big = tmp / "big"
        study, series = replicate_series(DATA / "mr_ge_signa_3dt1_100sl", args.instances, big)
        big_files = sorted(big.iterdir())
        store(4242, "ORTHANC", big_files, args.streams)
        store(11112, "CUBEPACS", big_files, args.streams)
        meta = f"/dicom-web/studies/{study}/series/{series}/metadata"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # our web worker builds the series once it is quiet
            r = httpx.get(f"http://127.0.0.1:8042/dicom-web/studies/{study}/series/{series}/instances",
                          headers=auth, params={"limit": 5000})
            if r.status_code == 200 and len(r.json()) == args.instances:
                break
            time.sleep(0.5)
        built = data_dir / "storage" / "default" / study / f"{series}.metadata.json"
        while not built.exists() and time.monotonic() < deadline:  # the web worker's pre-built metadata
            time.sleep(0.5)
        print("metadata built:", built.exists(), file=sys.stderr)
        timings("http://127.0.0.1:8043" + meta, {}, 1)  # warm both
        timings("http://127.0.0.1:8042" + meta, auth, 1)
        results["orthanc_meta_median"], results["orthanc_meta_p95"] = timings("http://127.0.0.1:8043" + meta, {},
                                                                              args.repeat)
        results["cubepacs_meta_median"], results["cubepacs_meta_p95"] = timings("http://127.0.0.1:8042" + meta,
                                                                                auth, args.repeat)
        qido = "http://127.0.0.1:8042/dicom-web/studies?PatientID=P0012*&limit=50"
        results["qido_median"], results["qido_p95"] = timings(qido, auth, 200)
        results["qido_miss_median"], results["qido_miss_p95"] = varying(auth, 200)
        results["qido_daterange_median"], results["qido_daterange_p95"] = timings(
            "http://127.0.0.1:8042/dicom-web/studies?StudyDate=20150101-20151231&limit=100", auth, 200)

        for name, proc in (("orthanc", orthanc), ("cubepacs", ours)):
            results[f"{name}_pss_mb"] = memory_mb(proc.pid)
            results[f"{name}_anon_mb"] = memory_mb(proc.pid, "Pss_Anon")
    finally:
        for p in (ours, orthanc):
            p.terminate()
            p.wait(timeout=30)
        cleanup(tmp)
    r = results
    print(f"\n{len(series_files())} files by {args.streams} concurrent storescu associations:")
    print(f"  C-STORE Orthanc   {r['orthanc_store_ips']:8.1f} instances/s")
    ratio = r["cubepacs_store_ips"] / r["orthanc_store_ips"]
    print(f"  C-STORE cubepacs  {r['cubepacs_store_ips']:8.1f} instances/s   ratio {ratio:.2f}×")
    print(f"/metadata of a {args.instances}-instance series ({args.repeat} requests):")
    print(f"  Orthanc   median {r['orthanc_meta_median'] * 1e3:8.1f} ms  p95 {r['orthanc_meta_p95'] * 1e3:8.1f} ms")
    print(f"  cubepacs  median {r['cubepacs_meta_median'] * 1e3:8.1f} ms  p95 {r['cubepacs_meta_p95'] * 1e3:8.1f} ms"
          f"   ratio (median) {r['orthanc_meta_median'] / r['cubepacs_meta_median']:.1f}×")
    print(f"QIDO over {args.studies} studies: PatientID wildcard median {r['qido_median'] * 1e3:.1f} ms "
          f"p95 {r['qido_p95'] * 1e3:.1f} ms; date range median {r['qido_daterange_median'] * 1e3:.1f} ms "
          f"p95 {r['qido_daterange_p95'] * 1e3:.1f} ms; varying (cache missed) median "
          f"{r['qido_miss_median'] * 1e3:.1f} ms p95 {r['qido_miss_p95'] * 1e3:.1f} ms")
    print("one frame, p50 / p95 ms (Orthanc | cubepacs | ratio of p50):")
    for kind, label in (("plain", "uncompressed CT, stored file"), ("jpegll", "JPEG-lossless CT, stored file")):
        o, c = (r[f"orthanc_frame_{kind}_median"], r[f"orthanc_frame_{kind}_p95"]), \
            (r[f"cubepacs_frame_{kind}_median"], r[f"cubepacs_frame_{kind}_p95"])
        print(f"  {label:32} {o[0] * 1e3:6.1f} / {o[1] * 1e3:6.1f} | {c[0] * 1e3:6.1f} / {c[1] * 1e3:6.1f} | "
              f"{o[0] / c[0]:.1f}×")
    o, c = (r["orthanc_frame_httpx_median"], r["orthanc_frame_httpx_p95"]), \
        (r["cubepacs_frame_httpx_median"], r["cubepacs_frame_httpx_p95"])
    print(f"  {'uncompressed CT, file, httpx':32} {o[0] * 1e3:6.1f} / {o[1] * 1e3:6.1f} | {c[0] * 1e3:6.1f} / "
          f"{c[1] * 1e3:6.1f} | {o[0] / c[0]:.1f}×")
    o, c = (r["orthanc_frame_cube_median"], r["orthanc_frame_cube_p95"]), \
        (r["cubepacs_frame_cube_median"], r["cubepacs_frame_cube_p95"])
    print(f"  {'uncompressed CT, ours from the cube':32} {o[0] * 1e3:6.1f} / {o[1] * 1e3:6.1f} | {c[0] * 1e3:6.1f} / "
          f"{c[1] * 1e3:6.1f} | {o[0] / c[0]:.1f}×")
    for kind, label in (("first", "CT series, each instance once"), ("random", "54-slice CT, shuffled order"),
                        ("viewer", "3D T1, each once, OHIF's Accept")):
        o, c = (r[f"orthanc_frame_{kind}_median"], r[f"orthanc_frame_{kind}_p95"]), \
            (r[f"cubepacs_frame_{kind}_median"], r[f"cubepacs_frame_{kind}_p95"])
        print(f"  {label:32} {o[0] * 1e3:6.1f} / {o[1] * 1e3:6.1f} | {c[0] * 1e3:6.1f} / {c[1] * 1e3:6.1f} | "
              f"{o[0] / c[0]:.1f}×")
    print(f"series /metadata, first request before compaction: Orthanc {r['orthanc_series_meta_first'] * 1e3:.1f} ms, "
          f"cubepacs {r['cubepacs_series_meta_first'] * 1e3:.1f} ms "
          f"({r['orthanc_series_meta_first'] / r['cubepacs_series_meta_first']:.1f}×)")
    print(f"study /metadata warm, p50 / p95: Orthanc {r['orthanc_study_meta_median'] * 1e3:.1f} / "
          f"{r['orthanc_study_meta_p95'] * 1e3:.1f} ms, cubepacs {r['cubepacs_study_meta_median'] * 1e3:.1f} / "
          f"{r['cubepacs_study_meta_p95'] * 1e3:.1f} ms "
          f"({r['orthanc_study_meta_median'] / r['cubepacs_study_meta_median']:.1f}×)")
    print(f"memory after all of it (PSS of the process tree / anonymous part): Orthanc {r['orthanc_pss_mb']} / "
          f"{r['orthanc_anon_mb']} MB, cubepacs {r['cubepacs_pss_mb']} / {r['cubepacs_anon_mb']} MB (cubepacs "
          f"also holds the {args.studies} QIDO studies, its caches warm)")
    print("raw:", json.dumps(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=4, help="concurrent storescu associations")
    ap.add_argument("--instances", type=int, default=1000, help="instances in the /metadata series")
    ap.add_argument("--studies", type=int, default=10_000, help="studies in the index for QIDO")
    ap.add_argument("--repeat", type=int, default=50, help="requests per /metadata measurement")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a cubepacs setting for this run, TOML (e.g. metadata_at_ingest=true); repeatable")
    ap.add_argument("--no-settle", action="store_true",
                    help="start at once, even within 6 minutes of the last benchmark's deletions (bench/_settle.py)")
    args = ap.parse_args()
    if inside_namespace():
        run_inside(args)
        return
    if shutil.which("Orthanc") is None:
        sys.exit("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
    if not args.no_settle:
        settle(tempfile.gettempdir())
    env = {**os.environ, "CUBEPACS_BENCH_NETNS": "1"}
    sys.exit(subprocess.call(["unshare", "-n", sys.executable, *sys.argv], env=env))


if __name__ == "__main__":
    io.DEFAULT_BUFFER_SIZE = 1 << 16
    main()
