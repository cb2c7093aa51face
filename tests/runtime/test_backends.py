"""Backend registry and the ONNX Runtime backends (CPU here; CUDA/TensorRT must refuse)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edge_runtime.backends import available_backends, make_backend
from edge_runtime.backends.onnxruntime import OrtBackend
from edge_runtime.cli import main
from edge_runtime.errors import BackendUnavailable, BundleError, ConfigError
from tests.runtime.helpers import run_argv


def _batch(n: int = 2, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_ort_cpu_matches_an_independent_session(toy_bundle):
    backend = make_backend("ort-cpu", intra_op_threads=1)
    backend.load(toy_bundle, "fp32")
    x = _batch()
    out = backend.infer(x)
    ref = ort.InferenceSession(str(toy_bundle.root / "model.onnx"), providers=["CPUExecutionProvider"])
    score, amap = ref.run(
        ["score", "anomaly_map"], {"image": x, "text_embeddings": np.load(toy_bundle.root / "text_embeddings.npy")}
    )
    np.testing.assert_allclose(out.score, score, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.anomaly_map, amap, rtol=0, atol=1e-6)
    assert out.score.shape == (2,) and out.anomaly_map.shape == (2, 8, 8)
    # The contract: score = 0.5 * (global + max of the map), so it is at least half the map max.
    assert np.all(out.score >= 0.5 * out.anomaly_map.max(axis=(1, 2)) - 1e-6)
    info = backend.describe()
    assert info["provider"] == "CPUExecutionProvider" and info["precision"] == "fp32"
    backend.close()


def test_int8_uses_the_variant_file(toy_bundle):
    backend = make_backend("ort-cpu")
    backend.load(toy_bundle, "int8")
    assert backend.describe()["model_file"] == "model.int8.onnx"
    fp32 = make_backend("ort-cpu")
    fp32.load(toy_bundle, "fp32")
    x = _batch(1)
    # Quantised weights move the score a little, not a lot.
    assert abs(float(backend.infer(x).score[0]) - float(fp32.infer(x).score[0])) < 0.1


def test_missing_int8_variant_is_a_bundle_error(toy_bundle_factory):
    bundle = toy_bundle_factory(int8=False)
    with pytest.raises(BundleError, match="no int8 ONNX model"):
        make_backend("ort-cpu").load(bundle, "int8")


def test_fp16_on_cpu_is_refused(toy_bundle):
    with pytest.raises(BackendUnavailable, match="cannot run fp16"):
        make_backend("ort-cpu").load(toy_bundle, "fp16")


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown backend 'onnx-gpu'; use one of ort-cpu, ort-cuda, ort-trt, trt"):
        make_backend("onnx-gpu")


@pytest.mark.parametrize(
    "name, provider", [("ort-cuda", "CUDAExecutionProvider"), ("ort-trt", "TensorrtExecutionProvider")]
)
def test_gpu_providers_unavailable_here_never_fall_back(name, provider, toy_bundle):
    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is available on this machine")
    with pytest.raises(
        BackendUnavailable, match=f"{name} .*not available; available providers: .*CPUExecutionProvider"
    ):
        make_backend(name)
    # Even constructed directly, load refuses rather than running on the CPU.
    with pytest.raises(BackendUnavailable, match="not available"):
        OrtBackend(name).load(toy_bundle, "fp32")


def test_session_ending_on_another_provider_is_refused(toy_bundle, monkeypatch):
    # ORT quietly drops a provider whose libraries fail to load; simulate exactly that report.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    real = ort.InferenceSession

    def session(path, sess_options=None, providers=None):
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", session)
    with pytest.raises(
        BackendUnavailable, match="asked for CUDAExecutionProvider but ONNX Runtime ran on CPUExecutionProvider"
    ):
        make_backend("ort-cuda").load(toy_bundle, "fp32")


def test_cli_run_with_unavailable_backend_exits_2_one_line(toy_bundle, tmp_path, capsys):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider available here")
    rc = main(run_argv(toy_bundle.root, "synthetic://", f"jsonl://{tmp_path / 'v.jsonl'}", "--backend", "ort-cuda"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert (
        len(err) == 1
        and "ort-cuda" in err[0]
        and "not available; available providers:" in err[0]
        and "Traceback" not in err[0]
    )


def test_available_backends_lists_every_builtin():
    infos = {b.name: b for b in available_backends()}
    assert infos["ort-cpu"].available
    assert {"ort-cpu", "ort-cuda", "ort-trt", "trt"} <= set(infos)
    assert infos["ort-cuda"].available == ("CUDAExecutionProvider" in ort.get_available_providers())


def test_bad_input_dtype_raises_not_crashes(toy_bundle):
    backend = make_backend("ort-cpu")
    backend.load(toy_bundle, "fp32")
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    with pytest.raises(InvalidArgument, match=r"expected: \(tensor\(uint8\)\)"):
        backend.infer(_batch().astype(np.float32))


def test_cli_unknown_backend_exits_2_one_line(toy_bundle, capsys):
    rc = main(run_argv(toy_bundle.root, "synthetic://", "stdout://", "--backend", "tensorflow"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown backend 'tensorflow'" in err[0] and "ort-cpu" in err[0]


def test_intra_op_threads_reach_the_session(toy_bundle):
    backend = make_backend("ort-cpu", intra_op_threads=1, allow_spinning=False)
    backend.load(toy_bundle, "fp32")
    assert backend.describe()["intra_op_threads"] == 1
    with pytest.raises(BackendUnavailable, match="intra_op_threads"):
        make_backend("ort-cpu", intra_op_threads=-1)
