"""Put the TensorRT / pycuda stand-ins (tests/fakes) in sys.modules for one test."""

from __future__ import annotations

import sys

import pytest


def install_fakes(
    monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0", gpu: str = "Orin", cc: tuple[int, int] = (8, 7)
):
    import tests.fakes.pycuda as pycuda_pkg
    import tests.fakes.tensorrt as trt
    from tests.fakes.pycuda import driver

    driver._fake_reset(gpu, cc)
    trt._fake_configure(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda_pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setattr(pycuda_pkg, "driver", driver, raising=False)
    # The fake GPU has no board model, even when the tests run on a real Jetson.
    from pathlib import Path

    from edge_runtime.trt import compat

    monkeypatch.setattr(compat, "JETSON_MODEL_FILE", Path("/nonexistent/device-tree/model"))
    return trt, driver


@pytest.fixture(params=["10.3.0", "8.6.2.3"], ids=["trt10", "trt8.6"])
def fake_trt(request, monkeypatch):
    """Fake TensorRT of the parametrised version on a fake Orin (sm 8.7); yields (trt, cuda)."""
    yield install_fakes(monkeypatch, request.param)


@pytest.fixture
def fake_trt10(monkeypatch):
    yield install_fakes(monkeypatch, "10.3.0")
