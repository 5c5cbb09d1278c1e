"""P-DATA-TF PDUs handed straight to DIMSE (archive/dimse/pdata.py): the same values pynetdicom's decoding gives,
the same stored bytes from DCMTK's storescu, and anything odd left to pynetdicom (which aborts)."""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from cubepacs.archive.dimse import lean, pdata
from tests.conftest import SERIES, dicom_files

CT = dicom_files(next(s for s in SERIES if s.name.startswith("ct_")))[:3]


def _encoded(pdvs: list[tuple[int, bytes]]) -> bytearray:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[cid, value] for cid, value in pdvs]  # type: ignore[misc]
    return bytearray(P_DATA_TF(primitive).encode())


@pytest.mark.parametrize("pdvs", [
    [(1, b"\x03" + bytes(77))],
    [(1, b"\x01" + bytes(range(256)) * 64), (1, b"\x03" + b"ab")],  # two items in one PDU
    [(255, b"\x00" + b"x" * 100_000), (3, b"\x02" + b"y"), (7, b"\x00")],
])
def test_values_are_pynetdicoms_decoding(pdvs: list[tuple[int, bytes]]) -> None:
    pdu = _encoded(pdvs)
    theirs = P_DATA_TF()
    theirs.decode(bytes(pdu))
    expected = [(cid, bytes(v)) for cid, v in theirs.to_primitive().presentation_data_value_list]
    found = pdata.values(pdu)
    assert found is not None and [(cid, bytes(v)) for cid, v in found] == expected == pdvs


@pytest.mark.parametrize("pdu", [
    bytes.fromhex("04 00 00000000"),  # no item
    bytes.fromhex("04 00 00000006 00000004 01 03"),  # an item claiming more than the PDU holds
    bytes.fromhex("04 00 00000005 00000001 01"),  # an item too short for its context ID and header
    bytes.fromhex("04 00 00000007 00000002 0103 ff"),  # a stray byte after the last item
])
def test_items_that_do_not_fill_the_pdu_are_left_to_pynetdicom(pdu: bytes) -> None:
    assert pdata.values(bytearray(pdu)) is None


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[bytes], list[bool], dict[str, bool]]]:
    """A lean acceptor keeping what it receives; ``switch["direct"] = False`` sends every PDU pynetdicom's way."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")  # as the archive's SCP runs (dimse/scp.py)
    outcomes: list[bool] = []
    switch = {"direct": True}
    receive = pdata.receive

    def counted(dul: Any) -> bool:
        outcomes.append(receive(dul) if switch["direct"] else False)
        return outcomes[-1]

    monkeypatch.setattr(pdata, "receive", counted)
    ae = AE(ae_title="DIRECT")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.maximum_pdu_size = 0
    stored: list[bytes] = []

    def on_store(event: Any) -> int:
        stored.append(event.request.DataSet.getvalue())
        return 0x0000

    srv = lean.start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_STORE, on_store)], None)
    try:
        yield srv.server_address[1], stored, outcomes, switch
    finally:
        srv.shutdown()


def _storescu(port: int, *files: object) -> None:
    res = subprocess.run(["storescu", "-aec", "DIRECT", "127.0.0.1", str(port), *map(str, files)], check=False,
                         env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_dcmtk_instances_arrive_byte_for_byte_as_through_pynetdicom(
        server: tuple[int, list[bytes], list[bool], dict[str, bool]]) -> None:
    port, stored, outcomes, switch = server
    _storescu(port, *CT)
    direct = list(stored)
    # storescu sends each of these instances as a command PDU and several data PDUs: all went the direct way
    assert outcomes.count(True) > 2 * len(CT)
    switch["direct"] = False
    stored.clear()
    _storescu(port, *CT)
    assert direct == stored and len(stored) == len(CT)
    for data, path in zip(direct, CT, strict=True):  # the instance (storescu re-encodes sequence lengths on the way)
        ds = pydicom.dcmread(path)
        assert pydicom.dcmread(io.BytesIO(data), force=True).SOPInstanceUID == ds.SOPInstanceUID
        assert data.endswith(ds.PixelData)


def test_a_p_data_tf_whose_items_do_not_add_up_aborts_its_association_only(
        server: tuple[int, list[bytes], list[bool], dict[str, bool]]) -> None:
    """A crafted PDU (built here: no real peer sends one) after an established association: pynetdicom decodes it
    and ends that association; the next sender stores as usual."""
    port, stored, _, _ = server
    client = AE(ae_title="CRAFTED")
    client.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = client.associate("127.0.0.1", port, ae_title="DIRECT")
    assert assoc.is_established
    assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
    assoc.dul.socket.socket.sendall(bytes.fromhex("04 00 00000006 00000009 01 03"))  # an item past the PDU's end
    deadline = time.monotonic() + 20
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established and assoc.is_aborted
    _storescu(port, CT[0])
    assert len(stored) == 1
