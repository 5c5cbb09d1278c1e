"""A backend that goes down: C-STORE is not acknowledged when its event cannot be queued; errors are clear and
never show passwords."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cubepacs._registry import mask_url, open_backend
from cubepacs.archive.dimse.scp import start_scp
from cubepacs.archive.index.store import Index
from cubepacs.archive.storage.file import FileStorage
from cubepacs.errors import BackendError
from tests.archive.conftest import free_port
from tests.conftest import SINGLES

pytestmark = pytest.mark.redis


def test_c_store_is_refused_when_the_queue_is_down(tmp_path: Path) -> None:
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    queue = open_backend("queue", f"redis://127.0.0.1:{port}/0")
    dimse = free_port()
    server = start_scp("127.0.0.1", dimse, "CUBEPACS", {"CUBEPACS": "t"}, FileStorage(tmp_path / "objects"), queue,
                       Index.from_url("sqlite://"))
    ds = dcmread(next(s for s in SINGLES if s.name == "ct_ge_small_signed.dcm"))
    ae = AE("SCU")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    try:
        assoc = ae.associate("127.0.0.1", dimse, ae_title="CUBEPACS")
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        redis.terminate()
        redis.wait(timeout=10)
        assoc = ae.associate("127.0.0.1", dimse, ae_title="CUBEPACS")
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == 0xA700  # out of resources: the event was not queued, so no success
    finally:
        server.shutdown()
        if redis.poll() is None:
            redis.kill()


def test_unreachable_backends_fail_clearly_without_passwords() -> None:
    with pytest.raises(BackendError, match=r"redis://:\*\*\*@127.0.0.1:1/0 is not reachable") as err:
        open_backend("queue", "redis://:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in str(err.value)
    with pytest.raises(BackendError) as err2:
        open_backend("index", "postgresql://app:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(err2.value) and "app:***@" in str(err2.value)
    assert mask_url("kafka://u:p@h:9092") == "kafka://u:***@h:9092"
