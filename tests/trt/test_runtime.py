"""TrtBackend against the stand-ins: numbers equal ONNX Runtime, buffers allocated once,
engines refused for another TensorRT version or GPU."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_runtime.backends.base import Backend
from edge_runtime.bundle import PreprocessSpec, load_bundle
from edge_runtime.errors import BackendUnavailable, BundleError, DataError
from edge_runtime.trt.builder import BuildOptions, build_engine
from edge_runtime.trt.runtime import TrtBackend
from tests.trt.conftest import install_fakes
from tests.trt.helpers import H, W, make_bundle, ort_reference

MEAN, STD = PreprocessSpec(image_size=(H, W)).mean, PreprocessSpec(image_size=(H, W)).std


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


@pytest.fixture
def fp16_bundle(fake_trt, tmp_path):
    bundle = make_bundle(tmp_path / "b", with_int8=True)
    build_engine(bundle, BuildOptions(precision="fp16", max_batch=4, opt_batch=2))
    return load_bundle(bundle.root)


def test_infer_matches_onnxruntime_and_buffers_are_allocated_once(fake_trt, fp16_bundle):
    trt, cuda = fake_trt
    be = TrtBackend()
    assert isinstance(be, Backend)
    be.load(fp16_bundle, "fp16")
    stats = cuda._fake_state().stats
    allocs, pinned = stats["mem_alloc"], stats["pagelocked_empty"]
    assert allocs == 4 and pinned == 4  # image, text_embeddings, score, anomaly_map
    htod_after_load = stats["htod"]
    for i, n in enumerate([1, 3, 4, 2, 1]):
        batch = _batch(n, seed=i)
        out = be.infer(batch)
        ref_score, ref_map = ort_reference(fp16_bundle, batch)
        assert out.score.shape == (n,) and out.anomaly_map.shape == ref_map.shape
        assert out.score.dtype == np.float32
        np.testing.assert_allclose(out.score, ref_score, atol=1e-2)
        np.testing.assert_allclose(out.anomaly_map, ref_map, atol=1e-2)
    assert stats["mem_alloc"] == allocs and stats["pagelocked_empty"] == pinned
    assert stats["htod"] - htod_after_load == 5  # only the image goes up per infer; text went up once
    d = be.describe()
    assert d["backend"] == "trt" and d["precision"] == "fp16" and d["tensorrt"] == trt.__version__
    assert d["gpu"] == "Orin" and d["engine"].endswith("model.fp16.engine") and d["max_batch"] == 4
    assert d["api"].startswith("tensor")
    be.close()
    assert not cuda._fake_state().allocations


def test_outputs_are_copies_not_the_reused_buffers(fake_trt, fp16_bundle):
    be = TrtBackend()
    be.load(fp16_bundle, "fp16")
    first = be.infer(_batch(1, 1))
    keep = first.anomaly_map.copy()
    be.infer(_batch(1, 2))
    np.testing.assert_array_equal(first.anomaly_map, keep)


def test_int8_qdq_engine_matches_qdq_onnx(fake_trt, fp16_bundle):
    build_engine(fp16_bundle, BuildOptions(precision="int8", max_batch=2))
    b = load_bundle(fp16_bundle.root)
    be = TrtBackend()
    be.load(b, "int8")
    batch = _batch(2, 5)
    ref_score, ref_map = ort_reference(b, batch, "int8")
    out = be.infer(batch)
    np.testing.assert_allclose(out.anomaly_map, ref_map, atol=1e-2)
    assert be.describe()["precision"] == "int8" and "explicit-qdq" in be.describe()["build_flags"]


def test_infer_from_another_thread(fake_trt, fp16_bundle):
    be = TrtBackend()
    be.load(fp16_bundle, "fp16")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("out", be.infer(_batch(1))))
    t.start()
    t.join()
    np.testing.assert_allclose(result["out"].score, ort_reference(fp16_bundle, _batch(1))[0], atol=1e-2)


def test_bad_batches_rejected(fake_trt, fp16_bundle):
    be = TrtBackend()
    be.load(fp16_bundle, "fp16")
    with pytest.raises(DataError, match="outside what the engine was built for"):
        be.infer(_batch(5))
    with pytest.raises(DataError, match="uint8"):
        be.infer(_batch(1).astype(np.float32))
    with pytest.raises(DataError, match="does not match"):
        be.infer(np.zeros((1, H + 1, W, 3), np.uint8))


def test_missing_engine_says_how_to_build(fake_trt, tmp_path):
    bundle = make_bundle(tmp_path / "b")
    with pytest.raises(
        BundleError, match="no fp16 TensorRT engine .* clipinspect build-engine --bundle .* --precision fp16"
    ):
        TrtBackend().load(bundle, "fp16")


def test_engine_from_other_tensorrt_version_refused(fake_trt, fp16_bundle, monkeypatch):
    trt, _ = fake_trt
    built = trt.__version__
    other = "10.7.0" if built.startswith("8") else "8.6.2.3"
    install_fakes(monkeypatch, other)
    with pytest.raises(BundleError) as exc:
        TrtBackend().load(fp16_bundle, "fp16")
    msg = str(exc.value)
    assert f"built with TensorRT {built}" in msg and f"this device has TensorRT {other}" in msg
    assert "build-engine" in msg and "--precision fp16" in msg


def test_engine_from_other_gpu_refused(fake_trt, fp16_bundle, monkeypatch):
    trt, _ = fake_trt
    install_fakes(monkeypatch, str(trt.__version__), gpu="NVIDIA GeForce RTX 4090", cc=(8, 9))
    with pytest.raises(
        BundleError,
        match=r"built for GPU 'Orin' \(compute capability 8.7\) but this device has 'NVIDIA GeForce RTX 4090' \(compute capability 8.9\); rebuild",
    ):
        TrtBackend().load(fp16_bundle, "fp16")


def test_tensorrt_itself_refuses_when_manifest_lies(fake_trt, fp16_bundle, monkeypatch):
    """If the manifest's version field were wrong, TensorRT's own check still stops the load."""
    from dataclasses import replace

    from edge_runtime.bundle import write_manifest

    trt, _ = fake_trt
    other = "10.7.0" if trt.__version__.startswith("8") else "8.6.2.3"
    m = fp16_bundle.manifest
    write_manifest(fp16_bundle.root, replace(m, engines=tuple(replace(e, tensorrt_version=other) for e in m.engines)))
    install_fakes(monkeypatch, other)
    with pytest.raises(BundleError, match="cannot load .*not compatible with this version of TensorRT"):
        TrtBackend().load(load_bundle(fp16_bundle.root), "fp16")


def test_legacy_bindings_api(monkeypatch, tmp_path):
    """TensorRT 8.4 (JetPack 5.0) engines have only the bindings API: execute_async_v2."""
    install_fakes(monkeypatch, "8.4.1.5")
    with pytest.raises(BundleError, match="UINT8"):  # uint8 network inputs need TensorRT >= 8.5
        build_engine(make_bundle(tmp_path / "u8"), BuildOptions(precision="fp16"))
    bundle = make_bundle(tmp_path / "b", float_input=True)
    build_engine(bundle, BuildOptions(precision="fp16", max_batch=2))
    be = TrtBackend()
    be.load(load_bundle(bundle.root), "fp16")
    assert be.describe()["api"].startswith("bindings")
    from edge_runtime.preprocess import normalize

    batch = normalize(_batch(2, 7), MEAN, STD)
    np.testing.assert_allclose(be.infer(batch).score, ort_reference(bundle, batch)[0], atol=1e-2)


def test_load_without_tensorrt_is_backend_error(tmp_path, monkeypatch):
    import sys
    from dataclasses import replace

    from edge_runtime.bundle import EngineEntry, with_file, write_manifest

    bundle = make_bundle(tmp_path / "b")
    (bundle.root / "model.fp16.engine").write_bytes(b"x")
    m = replace(
        bundle.manifest, engines=(EngineEntry("model.fp16.engine", "fp16", "model.onnx", "10.3.0", "Orin", "8.7"),)
    )
    write_manifest(bundle.root, with_file(m, bundle.root, "model.fp16.engine"))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    from edge_runtime.errors import MissingDependency

    with pytest.raises(MissingDependency, match="tensorrt is needed for the 'trt' backend"):
        TrtBackend().load(load_bundle(bundle.root), "fp16")


def test_infer_before_load():
    with pytest.raises(BackendUnavailable):
        TrtBackend().infer(_batch(1))


def test_registry_makes_trt_backend(fake_trt, fp16_bundle):
    from edge_runtime.backends import make_backend

    be = make_backend("trt")
    assert isinstance(be, TrtBackend)
    be.load(fp16_bundle.root, "fp16")  # a path works too
    batch = _batch(2, 3)
    np.testing.assert_allclose(be.infer(batch).score, ort_reference(fp16_bundle, batch)[0], atol=1e-2)
    with pytest.raises(BackendUnavailable, match="fp16 or int8 engines, not 'fp32'"):
        TrtBackend().load(fp16_bundle, "fp32")


def _primary_retained(cuda) -> int:
    return sum(ctx.retained for ctx in cuda._fake_state().primary.values())


def test_dropped_backend_frees_gpu_memory_and_the_context(fake_trt, fp16_bundle):
    """No close(): garbage collection alone gives back the device buffers and the retained
    primary context (weakref.finalize, not __del__)."""
    import gc
    import weakref

    _, cuda = fake_trt
    be = TrtBackend()
    be.load(fp16_bundle, "fp16")
    be.infer(_batch(1))
    assert cuda._fake_state().allocations and _primary_retained(cuda) == 1
    ref = weakref.ref(be)
    del be
    gc.collect()
    assert ref() is None
    assert not cuda._fake_state().allocations and _primary_retained(cuda) == 0
    assert cuda._fake_state().stats.get("late_destroy", 0) == 0  # TensorRT objects went first


def test_failed_load_and_double_close_release_exactly_once(fake_trt, fp16_bundle, monkeypatch):
    import gc

    _, cuda = fake_trt
    be = TrtBackend()
    be.load(fp16_bundle, "fp16")
    be.close()
    be.close()
    assert not cuda._fake_state().allocations and _primary_retained(cuda) == 0
    with pytest.raises(BackendUnavailable, match="after close"):
        be.infer(_batch(1))
    del be
    gc.collect()
    assert cuda._fake_state().stats.get("late_destroy", 0) == 0
    # A load that fails after the context was retained and buffers allocated gives both back.
    monkeypatch.setattr(
        TrtBackend, "_upload_text", lambda self, bundle, cuda: (_ for _ in ()).throw(BundleError("text rejected"))
    )
    with pytest.raises(BundleError, match="text rejected"):
        TrtBackend().load(fp16_bundle, "fp16")
    gc.collect()
    assert not cuda._fake_state().allocations and _primary_retained(cuda) == 0
    assert cuda._fake_state().stats.get("late_destroy", 0) == 0
