"""An instance the index names but the storage no longer holds (a file deleted by hand, a bucket restored
without it) is a 404 on every route that needs its bytes — never a 500 — and the instances beside it are served
as before.

Real files of ../shared/data stored with DCMTK's storescu; the stored file of one of them is then removed from the
storage folder behind the archive's back (the fault this tests). Compaction is off, so that the files are what is
served.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.archive.conftest import Server, dcmtk, free_port, start_server, stop_server, wait_until, write_config

pytestmark = pytest.mark.dcmtk

# uncompressed files: storescu proposes those syntaxes by default
FILES = ["ct_ge_small_signed.dcm", "mr_12bit_unsigned_siemens.dcm", "rgb_us_ge_uncompressed.dcm"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[tuple[Server, list[Path]]]:
    root = tmp_path_factory.mktemp("missing")
    dimse, http = free_port(), free_port()
    config = write_config(root / "c.toml", root / "data", dimse, http, compact=False)
    srv = start_server(root / "data", config, dimse, http)
    paths = [data_dir / "single" / name for name in FILES]
    try:
        sent = dcmtk("storescu", "-aec", "CUBEPACS", "127.0.0.1", str(srv.dimse_port), *map(str, paths))
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: len(httpx.get(f"{srv.url}/instances", headers=srv.headers()).json()) == len(paths))
        yield srv, paths
    finally:
        stop_server(srv)


def _routes(ds: pydicom.Dataset) -> dict[str, str]:
    base = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    return {"instance": base, "as stored": base + "?transfer-syntax=*", "frames": base + "/frames/1",
            "rendered": base + "/rendered", "thumbnail": base + "/thumbnail"}


def test_a_missing_file_is_404_on_every_route_and_its_neighbours_are_served(
        archive: tuple[Server, list[Path]]) -> None:
    srv, paths = archive
    gone = pydicom.dcmread(paths[0], stop_before_pixels=True)
    stored = [p for p in (srv.data_dir / "storage").rglob("*.dcm") if p.stem == gone.SOPInstanceUID]
    assert len(stored) == 1, "the stored file of the instance to remove"
    stored[0].unlink()

    for what, path in _routes(gone).items():
        answer = httpx.get(srv.url + path, headers=srv.headers(), timeout=30)
        assert answer.status_code == 404, (what, answer.status_code, answer.text[:200])
    for p in paths[1:]:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        for what, path in _routes(ds).items():
            answer = httpx.get(srv.url + path, headers=srv.headers(), timeout=30)
            assert answer.status_code == 200, (p.name, what, answer.status_code, answer.text[:200])
        got = httpx.get(srv.url + _routes(ds)["as stored"], headers=srv.headers()).content
        assert ds.SOPInstanceUID.encode() in got  # that instance itself, not another
