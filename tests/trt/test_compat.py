"""Engine compatibility rules (pure) and the GPU identity on a Jetson."""

from __future__ import annotations

import pytest

from edge_runtime.bundle import EngineEntry
from edge_runtime.errors import BundleError
from edge_runtime.trt import compat

ENTRY = EngineEntry(
    "model.fp16.engine", "fp16", "model.onnx", "8.6.2.3", "Orin (NVIDIA Jetson Orin Nano Developer Kit)", "8.7"
)


def test_same_version_and_gpu_accepted():
    compat.check_engine(ENTRY, "8.6.2.3", compat.GpuInfo("Orin (NVIDIA Jetson Orin Nano Developer Kit)", "8.7"), "/b")


@pytest.mark.parametrize(
    "version,gpu,needle",
    [
        (
            "10.3.0",
            compat.GpuInfo("Orin (NVIDIA Jetson Orin Nano Developer Kit)", "8.7"),
            "TensorRT 8.6.2.3 but this device has TensorRT 10.3.0",
        ),
        (
            "8.6.2.3",
            compat.GpuInfo("Orin (NVIDIA Jetson AGX Orin Developer Kit)", "8.7"),
            "but this device has 'Orin (NVIDIA Jetson AGX Orin",
        ),
        ("8.6.2.3", compat.GpuInfo("Orin (NVIDIA Jetson Orin Nano Developer Kit)", "8.9"), "compute capability 8.9"),
    ],
)
def test_mismatch_refused_with_fix(version, gpu, needle):
    with pytest.raises(BundleError) as exc:
        compat.check_engine(ENTRY, version, gpu, "/b")
    msg = str(exc.value)
    assert needle in msg and "rebuild it on this device: clipinspect build-engine --bundle /b --precision fp16" in msg


def test_gpu_name_carries_jetson_board(fake_trt10, tmp_path, monkeypatch):
    _, cuda = fake_trt10
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    monkeypatch.setattr(compat, "JETSON_MODEL_FILE", model)
    cuda.init()
    assert compat.gpu_info(cuda) == compat.GpuInfo("Orin (NVIDIA Jetson Orin Nano Developer Kit)", "8.7")
    monkeypatch.setattr(compat, "JETSON_MODEL_FILE", tmp_path / "absent")
    assert compat.gpu_info(cuda).name == "Orin"
