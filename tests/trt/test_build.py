"""build-engine against the TensorRT stand-in: flags, parser errors, profiles, caches, manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.bundle import load_bundle, sha256_file
from edge_runtime.cli import main
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.trt.builder import BuildOptions, build_engine
from tests.trt.helpers import calibrated_int8_argv, make_bundle, write_images


def _engine_header(path):
    import struct

    data = path.read_bytes()
    magic = b"FAKETRT-ENGINE\0"
    (n,) = struct.unpack("<I", data[len(magic) : len(magic) + 4])
    return json.loads(data[len(magic) + 4 : len(magic) + 4 + n])


def test_fp16_build_records_engine_and_bundle_still_verifies(fake_trt, tmp_path, capsys):
    trt, cuda = fake_trt
    bundle = make_bundle(tmp_path / "b")
    rc = main(
        [
            "build-engine",
            "--bundle",
            str(bundle.root),
            "--precision",
            "fp16",
            "--workspace",
            "256",
            "--max-batch",
            "4",
            "--opt-batch",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    b = load_bundle(bundle.root)  # verifies every sha256, including the new engine
    (e,) = b.manifest.engines
    assert e.file == "model.fp16.engine" and e.precision == "fp16" and e.source_onnx == "model.onnx"
    assert e.tensorrt_version == trt.__version__ and e.gpu_name == "Orin" and e.compute_capability == "8.7"
    assert e.workspace_mb == 256 and "FP16" in e.build_flags and "INT8" not in e.build_flags
    assert b.manifest.files["model.fp16.engine"].sha256 == sha256_file(b.path("model.fp16.engine"))
    hdr = _engine_header(b.path(e.file))
    assert hdr["flags"] == ["FP16"] and hdr["workspace"] == 256 << 20 and not hdr["qdq"]
    # dynamic batch -> one profile with min 1, opt 2, max 4 on 'image' only
    assert hdr["profiles"] == [{"image": [[1, 16, 16, 3], [2, 16, 16, 3], [4, 16, 16, 3]]}]
    assert "trtexec --onnx=" in out and "--fp16" in out and "--memPoolSize=workspace:256" in out
    assert "--maxShapes=image:4x16x16x3" in out and "--int8" not in out


def test_static_batch_builds_without_profile(fake_trt, tmp_path):
    bundle = make_bundle(tmp_path / "b", dynamic_batch=False)
    res = build_engine(bundle, BuildOptions(precision="fp16"))
    assert _engine_header(res.bundle.path(res.entry.file))["profiles"] == []


def test_int8_from_qdq_variant(fake_trt, tmp_path):
    bundle = make_bundle(tmp_path / "b", with_int8=True)
    res = build_engine(bundle, BuildOptions(precision="int8"))
    e = res.entry
    assert e.source_onnx == "model.int8.onnx" and "explicit-qdq" in e.build_flags
    assert e.calibration_cache == "" and e.calibration_set_sha256 == "ab" * 32  # the Q/DQ model's set
    hdr = _engine_header(res.bundle.path(e.file))
    assert hdr["qdq"] and set(hdr["flags"]) == {"INT8", "FP16"} and not hdr["calibrated"]
    load_bundle(bundle.root)


def test_int8_calibrator_path_writes_and_reuses_cache(fake_trt, tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    images = write_images(tmp_path / "good", 10)
    args = calibrated_int8_argv(bundle.root, images, 4, "--onnx", "fp32", "--calib-num", "8")
    assert main(args) == 0
    out = capsys.readouterr().out
    b = load_bundle(bundle.root)
    (e,) = b.manifest.engines
    assert e.precision == "int8" and e.source_onnx == "model.onnx" and "explicit-qdq" not in e.build_flags
    cache = b.path(e.calibration_cache)
    assert cache.is_file() and e.calibration_cache_sha256 == sha256_file(cache)
    assert b.manifest.files[e.calibration_cache].sha256 == e.calibration_cache_sha256
    assert len(e.calibration_set_sha256) == 64
    hdr = _engine_header(b.path(e.file))
    assert hdr["calibrated"] and set(hdr["calib_amax"]) == {"image", "text_embeddings"}
    assert "(written)" in out and "--int8" in out and "--calib=" in out
    # Second build with the same images reads the cache instead of calibrating again.
    assert main(args) == 0
    assert "(reused)" in capsys.readouterr().out
    assert len(load_bundle(bundle.root).manifest.engines) == 1  # replaced, not duplicated


def test_calibration_set_is_reproducible_and_content_hashed(fake_trt, tmp_path):
    from edge_runtime.trt.calib_data import calibration_set_sha256, sample_images

    images = write_images(tmp_path / "good", 12)
    a = sample_images(images, 5, seed=3)
    assert a == sample_images(images, 5, seed=3) and len(a) == 5
    # Same definition as `clipinspect calibrate` records (content hashes, in calibration order).
    from calibration.calibration_set import set_hash
    from edge_runtime.bundle import sha256_file

    assert calibration_set_sha256(a) == set_hash([sha256_file(p) for p in a])
    assert calibration_set_sha256(a) != calibration_set_sha256(list(reversed(a)))
    assert calibration_set_sha256(a) != calibration_set_sha256(sample_images(images, 5, seed=4))


def test_int8_without_qdq_or_images_is_a_clear_error(fake_trt, tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    rc = main(["build-engine", "--bundle", str(bundle.root), "--precision", "int8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--calib-images" in err[0] and "calibrate" in err[0]
    rc = main(["build-engine", "--bundle", str(bundle.root), "--precision", "int8", "--onnx", "int8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no int8 ONNX model" in err[0]


def test_parser_errors_are_all_reported(fake_trt, tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b", bad_op=True)
    rc = main(["build-engine", "--bundle", str(bundle.root), "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "2 error(s)" in err[0] and "FancyOp" in err[0] and "Mystery" in err[0]
    assert load_bundle(bundle.root).manifest.engines == ()


def test_timing_cache_round_trip(fake_trt, tmp_path):
    bundle = make_bundle(tmp_path / "b")
    tc = tmp_path / "timing.cache"
    build_engine(bundle, BuildOptions(precision="fp16", timing_cache=tc))
    first = tc.read_bytes()
    assert first and _engine_header(bundle.path("model.fp16.engine"))["timing_cache_hits"] == 0
    res = build_engine(load_bundle(bundle.root), BuildOptions(precision="fp16", timing_cache=tc))
    hdr = _engine_header(res.bundle.path(res.entry.file))
    assert hdr["timing_cache_hits"] > 0 and tc.read_bytes() == first


def test_timing_cache_from_other_gpu_refused(fake_trt, tmp_path, monkeypatch):
    from tests.trt.conftest import install_fakes

    trt, _ = fake_trt
    bundle = make_bundle(tmp_path / "b")
    tc = tmp_path / "timing.cache"
    build_engine(bundle, BuildOptions(precision="fp16", timing_cache=tc))
    install_fakes(monkeypatch, trt.__version__, gpu="NVIDIA GeForce RTX 4090", cc=(8, 9))
    with pytest.raises(BundleError, match="timing cache .* does not fit"):
        build_engine(load_bundle(bundle.root), BuildOptions(precision="fp16", timing_cache=tc))


def test_build_options_validated():
    with pytest.raises(ConfigError, match="opt-batch"):
        BuildOptions(precision="fp16", opt_batch=4, max_batch=2)
    with pytest.raises(ConfigError, match="only builds an int8"):
        BuildOptions(precision="fp16", onnx="int8")


def test_build_engine_without_tensorrt_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    bundle = make_bundle(tmp_path / "b")
    rc = main(["build-engine", "--bundle", str(bundle.root), "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "tensorrt is needed" in err[0] and "JetPack" in err[0]
    assert not np.any([p.suffix == ".engine" for p in bundle.root.iterdir()])


def test_conflicting_int8_sources_refused(fake_trt, tmp_path):
    from edge_runtime.trt.builder import CalibrationSet

    bundle = make_bundle(tmp_path / "b", with_int8=True)
    cal = CalibrationSet(make_batches=lambda b: [], sha256="0" * 64)
    with pytest.raises(ConfigError, match="already quantized"):
        build_engine(bundle, BuildOptions(precision="int8", onnx="int8"), cal)
    with pytest.raises(ConfigError, match="fp16 engine needs no calibration"):
        build_engine(bundle, BuildOptions(precision="fp16"), cal)


def test_calibration_with_no_batches_fails_with_tensorrt_reason(fake_trt, tmp_path):
    from edge_runtime.errors import BackendUnavailable
    from edge_runtime.trt.builder import CalibrationSet

    bundle = make_bundle(tmp_path / "b", with_int8=True)
    cal = CalibrationSet(make_batches=lambda b: [], sha256="0" * 64)
    with pytest.raises(BackendUnavailable, match="failed to build the int8 engine .*Calibration failure"):
        build_engine(bundle, BuildOptions(precision="int8"), cal)  # images given -> implicit calibration of fp32
    assert load_bundle(bundle.root).manifest.engines == ()


def test_calibrator_feeds_normalised_nchw_when_layout_says_so(fake_trt, tmp_path):
    import struct

    from edge_runtime.trt.builder import CalibrationSet
    from edge_runtime.trt.calib_data import ImageBatches, calibration_set_sha256, sample_images

    bundle = make_bundle(tmp_path / "b", float_input=True)
    paths = tuple(sample_images(write_images(tmp_path / "good", 4), 4))
    pre = bundle.manifest.preprocess
    cal = CalibrationSet(lambda b: ImageBatches(paths, pre, b), calibration_set_sha256(paths))
    res = build_engine(bundle, BuildOptions(precision="int8", calib_batch=2), cal)
    amax = _engine_header(res.bundle.path(res.entry.file))["calib_amax"]
    image_amax = struct.unpack(">f", bytes.fromhex(amax["image"]))[0] * 127
    assert 1.0 < image_amax < 3.0  # normalised pixels, not raw 0..255


def test_build_phases_logged_on_tensorrt10(fake_trt, tmp_path, caplog):
    import logging

    trt, _ = fake_trt
    bundle = make_bundle(tmp_path / "b")
    with caplog.at_level(logging.INFO, logger="edge_runtime.trt.builder"):
        build_engine(bundle, BuildOptions(precision="fp16"))
    phases = [r.getMessage() for r in caplog.records if "TensorRT build:" in r.getMessage()]
    if trt.__version__.startswith("10"):
        assert phases == ["TensorRT build: Building engine (2 steps)"]
    else:
        assert phases == []  # no IProgressMonitor before 10
