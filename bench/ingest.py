"""C-STORE ingest, cubepacs vs Orthanc, measured fairly: same data, same clients, both servers given
``TCP_NODELAY=1`` in their environment (Orthanc, like every DCMTK-based server, reads it), in one private network
namespace.

Usage (root): .venv/bin/python bench/ingest.py [--levels 1,4,16,32] [--rounds 3] [--layout embedded|services]
       [--long 1000] [--set KEY=VALUE]

For each number of concurrent DCMTK storescu associations, the 404 files of the four series of ../shared/data are
sent to each server with new Study/Series/SOP Instance UIDs (a fresh copy per level and round, the same files to both
servers, so nothing is a re-send), ``--rounds`` times (3 by default), the servers taking turns going first; the
table gives each level's medians over the rounds and every round's ratio (one level is about a second of work per
server, and this machine's speed drifts by tens of percent from one second to the next).
Reported per server: instances/s and MB/s, refused or failed associations, server CPU per instance (user + system
time of the server process, indexing included: measured until the instances are visible in a query), and for
cubepacs the indexing lag (last acknowledgement → all instances visible in QIDO); and the storescu clients' own CPU per
instance (the same work for both servers, sharing the 2 vCPUs with them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import pydicom
from _common import memory_mb, wait_http  # bench/_common.py (this folder is on sys.path when run as a script)
from _settle import cleanup, settle  # bench/_settle.py
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "series"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a server: the process, the children it waited for, and its live children
    (cubepacs' DIMSE worker processes) — the whole tree."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    total = sum(int(v) for v in fields[11:15]) / TICK  # utime, stime, cutime, cstime
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        total += sum(cpu_seconds(int(child)) for child in children)
    return total


def copies(out: Path, long: int = 0) -> list[Path]:
    """The shared series with new UIDs (one new study per series); with ``long``, instead one series of that
    many instances: the GE 3D T1 series repeated with new UIDs (synthetic by necessity: no real series that long
    is in the data set)."""
    out.mkdir(parents=True)
    files: list[Path] = []
    folders = sorted(d for d in DATA.iterdir() if d.is_dir())
    for folder in ([DATA / "mr_ge_signa_3dt1_100sl"] if long else folders):
        study, series = generate_uid(), generate_uid()
        sources = sorted(f for f in folder.iterdir() if f.suffix != ".txt" and f.name != "DIRFILE")
        for f in ([sources[k % len(sources)] for k in range(long)] if long else sources):
            ds = pydicom.dcmread(f)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = len(files) + 1
            target = out / f"{len(files):05d}.dcm"
            ds.save_as(target)
            files.append(target)
    return files


def store(port: int, aet: str, files: list[Path], streams: int) -> tuple[float, int]:
    """(seconds, failed storescu processes) for ``streams`` concurrent storescu over ``files``."""
    seconds, failed, _ = store_timed(port, aet, files, streams)
    return seconds, failed


def store_timed(port: int, aet: str, files: list[Path], streams: int) -> tuple[float, int, float]:
    """(seconds, failed storescu processes, the storescu processes' CPU seconds) for ``streams`` concurrent
    storescu over ``files``."""
    chunks = [files[i::streams] for i in range(streams)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, c)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in chunks if c]
    failed = sum(p.wait() != 0 for p in procs)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, failed, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process on the machine (the backends serving our index included)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text:
            total += sum(int(v) for v in text.rsplit(")", 1)[1].split()[11:13]) / TICK
    return total


def services_layout(tmp: Path) -> tuple[str, subprocess.Popen[bytes], str]:
    """PostgreSQL (this machine's, over its Unix socket: reachable from the private network namespace) and a Redis
    started here with an fsynced append-only file: (settings lines, the Redis process, the database name)."""
    db = f"cubepacs_bench_{os.getpid()}"
    subprocess.run(["psql", "-h", "/var/run/postgresql", "-U", "postgres", "-qc", f"CREATE DATABASE {db}"],
                   check=True)
    (tmp / "redis").mkdir()
    redis = subprocess.Popen(["redis-server", "--port", "6390", "--bind", "127.0.0.1", "--dir", str(tmp / "redis"),
                              "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):  # up before cubepacs opens its queue
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 6390)) == 0:
                break
        time.sleep(0.1)
    lines = (f'index_url = "postgresql://postgres@/{db}?host=/var/run/postgresql"\n'
             'queue_url = "redis://127.0.0.1:6390/0"\n')
    return lines, redis, db


def run_inside(levels: list[int], layout: str, long: int = 0, settings: list[str] | None = None,
               rounds: int = 1) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="cubepacs-ingest-"))
    backends, redis, db = services_layout(tmp) if layout == "services" else ("", None, "")
    env = {**os.environ, "TCP_NODELAY": "1"}
    ocfg = {"Name": "bench", "StorageDirectory": str(tmp / "orthanc"), "IndexDirectory": str(tmp / "orthanc"),
            "DicomAet": "ORTHANC", "DicomPort": 4242, "HttpPort": 8043, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "MaximumPatientCount": 0,
            "DicomThreadsCount": 32}
    (tmp / "orthanc.json").write_text(json.dumps(ocfg))
    orthanc = subprocess.Popen(["Orthanc", str(tmp / "orthanc.json")], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    key = "bench-key-0123456789"
    (tmp / "c.toml").write_text(f'[cubepacs]\ndata_dir = "{tmp / "cubepacs"}"\nquiet_seconds = 3600\n'
                                f'api_keys = {{ "{key}" = "default" }}\n{backends}'
                                + "".join(f"{s}\n" for s in settings or []))
    ours = subprocess.Popen([sys.executable, "-m", "cubepacs", "serve", "--config", str(tmp / "c.toml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    auth = {"Authorization": f"Bearer {key}", "Accept-Encoding": "identity"}
    rows: list[dict[str, Any]] = []
    stored = {"Orthanc": 0, "cubepacs": 0}
    servers = [("Orthanc", 4242, "ORTHANC", orthanc.pid), ("cubepacs", 11112, "CUBEPACS", ours.pid)]
    try:
        wait_http("http://127.0.0.1:8043/system")
        wait_http("http://127.0.0.1:8042/healthz")
        for level in levels:
            for rnd in range(rounds):
                # one set of copies per level and round, sent to both servers and deleted only at the end: this
                # disk's ext4 has no journal, and then every file created skips the inodes deleted in the last
                # minutes one by one (perf: 14 % of the server's CPU when the copies of the run before were just
                # deleted)
                files = copies(tmp / f"copies-{level}-{rnd}", long)
                # the servers take turns going first, round by round: neither always meets the other's wake
                for name, port, aet, pid in servers if rnd % 2 == 0 else servers[::-1]:
                    stored[name] += len(files)
                    row = measure(name, port, aet, pid, files, level, stored[name], auth,
                                  redis.pid if redis is not None and name == "cubepacs" else None)
                    rows.append({**row, "associations": level, "round": rnd})
                    print(json.dumps(rows[-1]), file=sys.stderr)
        rss = {name: memory_mb(pid) for name, _, _, pid in servers}
        anon = {name: memory_mb(pid, "Pss_Anon") for name, _, _, pid in servers}
    finally:
        for p in (ours, orthanc, *((redis,) if redis is not None else ())):
            p.terminate()
            p.wait(timeout=30)
        if db:
            subprocess.run(["psql", "-h", "/var/run/postgresql", "-U", "postgres", "-qc", f"DROP DATABASE {db}"],
                           check=False)
        cleanup(tmp)
    report(rows, levels, rounds)
    print(f"memory (PSS of the process tree) after the runs: Orthanc {rss['Orthanc']} MB, "
          f"cubepacs {rss['cubepacs']} MB; of it anonymous (heaps, not library pages): Orthanc {anon['Orthanc']} MB, "
          f"cubepacs {anon['cubepacs']} MB")
    print("clients: the storescu processes' own CPU (user + system) per instance, the same work for both servers; "
          "on these 2 vCPUs it is shared with the server, so it bounds the throughput ratio")
    if layout == "services":
        backend = {level: per_inst([r for r in rows if r["server"] == "cubepacs" and r["associations"] == level],
                                   "backend_cpu_ms_per_instance") for level in levels}
        print("cubepacs over PostgreSQL (index) + Redis (queue, appendfsync always); their CPU per instance, not "
              "counted above: " + ", ".join(f"{level}: {ms:.1f} ms" for level, ms in backend.items()))


def measure(name: str, port: int, aet: str, pid: int, files: list[Path], level: int, total: int,
            auth: dict[str, str], redis_pid: int | None) -> dict[str, Any]:
    """One server's round: ``files`` by ``level`` concurrent storescu; for cubepacs, until the ``total``-th
    instance it holds is visible in QIDO (its indexing lag); CPU of the server's process tree over both."""
    size = sum(f.stat().st_size for f in files)
    cpu0 = cpu_seconds(pid)
    extra0 = (cpu_seconds(redis_pid) + postgres_cpu()) if redis_pid is not None else 0.0
    seconds, failed, client = store_timed(port, aet, files, level)
    lag = 0.0
    if name == "cubepacs":
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 120:  # never forever: a lost instance shows as a 120 s lag
            # the last of them visible? (one row asked for: the polling itself costs the server little)
            r = httpx.get("http://127.0.0.1:8042/dicom-web/instances", headers=auth,
                          params={"limit": 1, "offset": total - 1})
            if r.status_code == 200 and len(r.json()) == 1:
                break
            time.sleep(0.05)
        lag = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    extra = ((cpu_seconds(redis_pid) + postgres_cpu()) - extra0) if redis_pid is not None else 0.0
    return {"server": name, "instances": len(files), "inst_s": len(files) / seconds, "mb_s": size / seconds / 1e6,
            "failed": failed, "cpu_ms_per_instance": 1000 * cpu / len(files), "lag_s": lag,
            "backend_cpu_ms_per_instance": 1000 * extra / len(files),
            "client_cpu_ms_per_instance": 1000 * client / len(files)}


def per_inst(rows: list[dict[str, Any]], field: str) -> float:
    """A per-instance field over several rounds, weighted by their instances."""
    return float(sum(r[field] * r["instances"] for r in rows) / sum(r["instances"] for r in rows))


def report(rows: list[dict[str, Any]], levels: list[int], rounds: int) -> None:
    """The table: per level, the median over rounds of each server's instances/s and of the rounds' ratios (each
    round's two servers measured back to back), every round's ratio, and CPU per instance over all rounds."""
    print(f"{'assoc':>5} {'Orthanc inst/s':>14} {'cubepacs inst/s':>15} {'ratio':>6} {'MB/s O/c':>13} "
          f"{'CPU ms/inst O/c':>16} {'failed O/c':>10} {'lag s':>6} {'clients ms/inst O/c':>20}"
          + ("  ratio per round" if rounds > 1 else ""))
    for level in levels:
        o = [r for r in rows if r["server"] == "Orthanc" and r["associations"] == level]
        c = [r for r in rows if r["server"] == "cubepacs" and r["associations"] == level]
        ratios = [b["inst_s"] / a["inst_s"] for a, b in zip(o, c, strict=True)]
        print(f"{level:5d} {median([r['inst_s'] for r in o]):14.1f} {median([r['inst_s'] for r in c]):15.1f} "
              f"{median(ratios):5.2f}x {median([r['mb_s'] for r in o]):6.1f}/{median([r['mb_s'] for r in c]):<6.1f} "
              f"{per_inst(o, 'cpu_ms_per_instance'):7.1f}/{per_inst(c, 'cpu_ms_per_instance'):<8.1f} "
              f"{sum(r['failed'] for r in o):4d}/{sum(r['failed'] for r in c):<5d} {max(r['lag_s'] for r in c):6.2f} "
              f"{per_inst(o, 'client_cpu_ms_per_instance'):9.1f}/{per_inst(c, 'client_cpu_ms_per_instance'):<8.1f}"
              + (("  " + " ".join(f"{x:.2f}" for x in ratios)) if rounds > 1 else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,4,16,32", help="concurrent storescu associations, comma-separated")
    ap.add_argument("--layout", choices=["embedded", "services"], default="embedded",
                    help="cubepacs' backends: embedded (SQLite, embedded queue) or PostgreSQL + Redis")
    ap.add_argument("--long", type=int, default=0,
                    help="send one series of this many instances instead of the shared series (e.g. 1000)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds per level, each with new copies, the servers taking turns going first; the table "
                         "gives medians over rounds (1: one measurement per level, as before)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a cubepacs setting for this run, TOML (e.g. metadata_at_ingest=true); repeatable")
    ap.add_argument("--no-settle", action="store_true",
                    help="start at once, even within 6 minutes of the last benchmark's deletions (bench/_settle.py)")
    args = ap.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    if os.environ.get("CUBEPACS_BENCH_NETNS") == "1":
        run_inside(levels, args.layout, args.long, args.set, max(1, args.rounds))
        return
    if shutil.which("Orthanc") is None:
        sys.exit("Orthanc is not installed: apt-get install orthanc")
    if not args.no_settle:
        settle(tempfile.gettempdir())
    sys.exit(subprocess.call(["unshare", "-n", sys.executable, *sys.argv],
                             env={**os.environ, "CUBEPACS_BENCH_NETNS": "1"}))


if __name__ == "__main__":
    main()
