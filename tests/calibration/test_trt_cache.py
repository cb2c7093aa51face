"""`calibrate --trt-cache` drives the target-side TensorRT builder (H5) with the same calibration
set. TensorRT/pycuda are the stand-ins in tests/fakes (TensorRT cannot be installed here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_runtime.bundle import load_bundle, sha256_file
from edge_runtime.cli import main


@pytest.fixture()
def fake_trt(monkeypatch):
    from tests.trt.conftest import install_fakes

    return install_fakes(monkeypatch, "10.3.0")


def test_calibrate_with_trt_cache(fake_trt, tiny_bundle: Path, bottle: Path, tmp_path: Path, capsys) -> None:
    contract_bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    rc = main(
        ["-q", "calibrate", "--bundle", str(contract_bundle), "--images", str(bottle), "--num", "3", "--trt-cache"]
    )
    cap = capsys.readouterr()
    out = cap.out
    assert rc == 0, cap.err
    b = load_bundle(contract_bundle, verify=True)
    (variant,) = b.manifest.variants
    (engine,) = b.manifest.engines
    # One calibration set for both INT8 paths, identified by the same hash.
    assert engine.calibration_set_sha256 == variant.calibration_set_sha256
    assert engine.calibration_cache and sha256_file(b.path(engine.calibration_cache)) == engine.calibration_cache_sha256
    assert "calibration cache" in out and "(written)" in out
