"""The registry's `trt` entry and doctor's TensorRT/CUDA probes, against the repo's stand-ins
for tensorrt/pycuda (tests/fakes, owned by the TensorRT area), as on a Jetson."""

from __future__ import annotations

import json
import sys

import pytest

from edge_runtime.backends import available_backends, make_backend
from edge_runtime.cli import main
from tests.runtime.helpers import run_argv


@pytest.fixture
def fake_sdks(monkeypatch):
    import tests.fakes.pycuda as pycuda_pkg
    import tests.fakes.tensorrt as trt
    from tests.fakes.pycuda import driver

    driver._fake_reset("Orin", (8, 7))
    trt._fake_configure("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda_pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setattr(pycuda_pkg, "driver", driver, raising=False)
    # find_spec consults sys.path, not sys.modules: put the stand-ins' folder on it.
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "fakes"))
    return trt


def test_trt_is_made_lazily_from_its_module(fake_sdks):
    backend = make_backend("trt")
    assert type(backend).__name__ == "TrtBackend" and type(backend).__module__ == "edge_runtime.trt.runtime"
    assert {b.name: b.available for b in available_backends()}["trt"] is True


def test_trt_without_an_engine_is_a_one_line_error(fake_sdks, toy_bundle, tmp_path, capsys):
    rc = main(
        run_argv(
            toy_bundle.root,
            "synthetic://",
            f"jsonl://{tmp_path / 'v.jsonl'}",
            "--backend",
            "trt",
            "--precision",
            "fp16",
        )
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "engine" in err[0].lower()


def test_doctor_reports_tensorrt_and_cuda(fake_sdks, capsys):
    assert main(["doctor", "--json", "--backend", "trt"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["tensorrt"]["status"] == "ok" and "10.3.0" in checks["tensorrt"]["detail"]
    assert checks["cuda"]["status"] == "ok" and "Orin" in checks["cuda"]["detail"]
    assert checks["backend trt"]["status"] == "ok" and checks["backend trt"]["required"]


def test_options_for_non_ort_backends_are_refused():
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="takes no options"):
        make_backend("trt", intra_op_threads=2)
