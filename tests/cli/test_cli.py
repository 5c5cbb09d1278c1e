"""The cubepacs command line, run as a user would (a real subprocess for the main path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cubepacs.cli import app
from tests.conftest import MALFORMED, SERIES, dicom_files

runner = CliRunner()


def test_convert_info_verify_export_in_a_subprocess(tmp_path: Path) -> None:
    series = next(s for s in SERIES if s.name.startswith("mr_ge_mr750"))
    cube = tmp_path / "mr.dcbs"
    cmd = [sys.executable, "-m", "cubepacs", "convert", str(series), "-o", str(cube)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "done: 150 frames" in done.stdout
    info = runner.invoke(app, ["info", str(cube)])
    assert info.exit_code == 0, info.output
    assert "150 instances" in info.output and "shared elements" in info.output
    assert runner.invoke(app, ["verify", str(cube)]).exit_code == 0
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(cube), "-o", str(out)])
    assert result.exit_code == 0 and "wrote 150 files" in result.output
    for f in dicom_files(series):
        assert (out / f.name).read_bytes() == f.read_bytes()


def test_batch_convert_many_folders(tmp_path: Path) -> None:
    small = [s for s in SERIES if s.name.startswith(("mr_ge_mr750", "ct_philips"))]
    result = runner.invoke(app, ["convert", *map(str, small), "-o", str(tmp_path / "cubes"), "--codec", "blosc2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "cubes").iterdir()) == sorted(f"{s.name}.dcbs" for s in small)


def test_verify_fails_on_a_damaged_cube(tmp_path: Path) -> None:
    cube = tmp_path / "x.dcbs"
    assert runner.invoke(app, ["convert", str(SERIES[2]), "-o", str(cube)]).exit_code == 0
    data = bytearray(cube.read_bytes())
    data[-100] ^= 0xFF
    cube.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(cube)])
    assert result.exit_code == 1 and "checksum" in result.output


def test_qc_and_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["qc", str(SERIES[0])])
    assert result.exit_code == 0 and "no issues" in result.output
    files = dicom_files(SERIES[0])
    (tmp_path / "gap").mkdir()
    for f in files[:5] + files[7:10]:
        (tmp_path / "gap" / f.name).write_bytes(f.read_bytes())
    result = runner.invoke(app, ["qc", str(tmp_path / "gap"), "--strict"])
    assert result.exit_code == 1 and "missing InstanceNumber" in result.output
    bad = next(p for p in MALFORMED if p.name.startswith("truncated_dataset"))
    result = runner.invoke(app, ["convert", str(bad), "-o", str(tmp_path / "b.dcbs")])
    assert result.exit_code == 2 and bad.name in result.output and "truncated" in result.output
    assert not (tmp_path / "b.dcbs").exists()
    result = runner.invoke(app, ["convert", str(SERIES[0]), "-o", str(tmp_path / "c.dcbs"), "--codec", "zip"])
    assert result.exit_code == 2 and "unknown codec" in result.output


def test_viewer_install_with_the_default_relative_data_dir(tmp_path: Path) -> None:
    """README's first command runs `cubepacs viewer install` with the default ``./cubepacs-data``: a relative
    folder, while npm runs in a folder of its own (it once got a relative --pack-destination and failed)."""
    run = subprocess.run([sys.executable, "-m", "cubepacs", "viewer", "install"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "cubepacs-data" / "viewer" / "index.html").is_file()
