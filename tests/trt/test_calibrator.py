"""The entropy calibrator's protocol with TensorRT (via the stand-ins)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.bundle import PreprocessSpec
from edge_runtime.errors import DataError
from edge_runtime.preprocess import normalize
from edge_runtime.trt import compat
from edge_runtime.trt.calib_data import ImageBatches, sample_images
from edge_runtime.trt.calibrator import CalibrationInputs, make_entropy_calibrator
from tests.trt.helpers import D, H, W, write_images

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _inputs(layout="NHWC_uint8", batch=2, text=True):
    shape = (batch, H, W, 3) if layout == "NHWC_uint8" else (batch, 3, H, W)
    emb = np.arange(2 * D, dtype=np.float32).reshape(2, D) if text else None
    return CalibrationInputs("image", shape, layout, MEAN, STD, "text_embeddings" if text else None, emb)


def _batches(n, batch=2):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (batch, H, W, 3), dtype=np.uint8) for _ in range(n)]


def test_get_batch_gives_device_pointers_until_exhausted(fake_trt, tmp_path):
    trt, cuda = fake_trt
    data = _batches(3)
    ctx = compat.PrimaryContext(cuda)
    with ctx:
        cal = make_entropy_calibrator(trt, cuda, data, _inputs(), tmp_path / "c.cache")
        assert isinstance(cal, trt.IInt8EntropyCalibrator2) and cal.get_batch_size() == 2
        names = ["image", "text_embeddings"]
        for expected in data:
            ptrs = cal.get_batch(names)
            assert len(ptrs) == 2 and all(isinstance(p, int) for p in ptrs)
            img = cuda._fake_device_view(ptrs[0], expected.nbytes).reshape(expected.shape)
            np.testing.assert_array_equal(img, expected)
            text = cuda._fake_device_view(ptrs[1], 2 * D * 4).view(np.float32).reshape(2, D)
            np.testing.assert_array_equal(text, np.arange(2 * D, dtype=np.float32).reshape(2, D))
        assert cal.get_batch(names) is None
        assert cal.batches_used == 3
        cal.free()
    assert not cuda._fake_state().allocations


def test_one_device_buffer_for_all_batches(fake_trt, tmp_path):
    trt, cuda = fake_trt
    with compat.PrimaryContext(cuda):
        cal = make_entropy_calibrator(trt, cuda, _batches(4), _inputs(text=False), tmp_path / "c.cache")
        before = cuda._fake_state().stats["mem_alloc"]
        ptrs = {cal.get_batch(["image"])[0] for _ in range(4)}
        assert len(ptrs) == 1 and cuda._fake_state().stats["mem_alloc"] == before


def test_nchw_float_layout_is_normalised_like_preprocess(fake_trt, tmp_path):
    trt, cuda = fake_trt
    data = _batches(1)
    with compat.PrimaryContext(cuda):
        cal = make_entropy_calibrator(trt, cuda, data, _inputs("NCHW_float32", text=False), tmp_path / "c.cache")
        (ptr,) = cal.get_batch(["image"])
        want = normalize(data[0], MEAN, STD)
        got = cuda._fake_device_view(ptr, want.nbytes).view(np.float32).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_wrong_batch_shape_and_unknown_input_are_errors(fake_trt, tmp_path):
    trt, cuda = fake_trt
    with compat.PrimaryContext(cuda):
        cal = make_entropy_calibrator(trt, cuda, _batches(1, batch=3), _inputs(), tmp_path / "c.cache")
        with pytest.raises(DataError, match="expected \\(2, 16, 16, 3\\) uint8"):
            cal.get_batch(["image", "text_embeddings"])
        cal = make_entropy_calibrator(trt, cuda, _batches(1), _inputs(), tmp_path / "c.cache")
        with pytest.raises(DataError, match="'pixel_values'"):
            cal.get_batch(["pixel_values"])


def test_cache_read_and_write(fake_trt, tmp_path):
    trt, cuda = fake_trt
    path = tmp_path / "c.cache"
    with compat.PrimaryContext(cuda):
        cal = make_entropy_calibrator(trt, cuda, [], _inputs(), path)
        assert cal.read_calibration_cache() is None and not cal.cache_was_read
        cal.write_calibration_cache(memoryview(b"TRT-1030-EntropyCalibration2\nimage: 3c010a14\n"))
        assert path.read_bytes().startswith(b"TRT-1030")
        assert cal.read_calibration_cache() == path.read_bytes() and cal.cache_was_read


def test_needs_a_current_cuda_context(fake_trt, tmp_path):
    trt, cuda = fake_trt
    cuda.init()
    with pytest.raises(cuda.LogicError, match="invalid device context"):
        make_entropy_calibrator(trt, cuda, [], _inputs(), tmp_path / "c.cache")


def test_image_batches_from_files(tmp_path):
    folder = write_images(tmp_path / "good", 5, size=40)
    (tmp_path / "good" / "ground_truth").mkdir()
    write_images(tmp_path / "good" / "ground_truth", 3)
    paths = sample_images(folder, 10)
    assert len(paths) == 5 and all("ground_truth" not in p.parts for p in paths)
    batches = list(ImageBatches(tuple(paths), PreprocessSpec(image_size=(H, W)), 2))
    assert len(batches) == 2 and batches[0].shape == (2, H, W, 3) and batches[0].dtype == np.uint8
    with pytest.raises(DataError, match="fewer than one batch of 8"):
        list(ImageBatches(tuple(paths), PreprocessSpec(image_size=(H, W)), 8))
    with pytest.raises(DataError, match="not found"):
        sample_images(tmp_path / "nope", 3)
