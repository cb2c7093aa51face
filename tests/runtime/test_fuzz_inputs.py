"""No input stops the line (issue 9 item 3): property-based fuzzing of the decode paths.

* image bytes -> `decode_rgb` (the folder source's decoder): an HxWx3 uint8 image or a
  DataError, never another exception, whatever the bytes (random, truncated, bit-flipped,
  headers rewritten to huge or zero dimensions);
* frame arrays (any dtype, shape, channel count, pixel format, as a camera SDK might hand
  them over) -> the real Pipeline: exactly one valid record per frame id, never an exception
  out of the capture or inference thread.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.errors import DataError
from edge_runtime.frames import Frame
from edge_runtime.imageio import decode_rgb, header_size
from edge_runtime.pipeline import Pipeline, PipelineOptions, make_preprocessor
from edge_runtime.postprocess import Postprocessor
from edge_runtime.verdict import validate_verdict
from tests.runtime.test_pipeline import ListPublisher

_rng = np.random.default_rng(7)
_IMG = _rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
SEEDS = {
    ext: cv2.imencode(ext, _IMG, params)[1].tobytes()
    for ext, params in ((".png", []), (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 80]), (".bmp", []), (".tiff", []))
}
SEEDS[".progressive.jpg"] = cv2.imencode(".jpg", _IMG, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
SEEDS[".16bit.png"] = cv2.imencode(".png", _IMG.astype(np.uint16) * 257)[1].tobytes()


@pytest.fixture(scope="module")
def backend(toy_bundle):
    from edge_runtime.backends import make_backend

    b = make_backend("ort-cpu", intra_op_threads=1)
    b.load(toy_bundle, "fp32")
    return b


def _check_decode(data: bytes, max_pixels: int = 10_000_000) -> None:
    try:
        img = decode_rgb(data, "fuzz", max_pixels=max_pixels)
    except DataError:
        return
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and img.size > 0
    assert img.shape[0] * img.shape[1] <= max_pixels


@st.composite
def mutated(draw):
    seed = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
    data = bytearray(seed)
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "dims"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 16))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "splice":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(max_size=64))
    elif seed[:4] == b"\x89PNG":
        w, h = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
        data[16:24] = struct.pack(">II", w, h)
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=2048), mutated()))
def test_any_bytes_decode_to_an_image_or_a_data_error(data):
    _check_decode(data)


def test_huge_header_is_refused_before_decoding():
    data = bytearray(SEEDS[".png"])
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    assert header_size(bytes(data)) == (100_000, 100_000)
    with pytest.raises(DataError, match="too large"):
        decode_rgb(bytes(data), "bomb.png")


# -- frame arrays through the pipeline ------------------------------------------------------
DTYPES = (np.uint8, np.uint16, np.int8, np.float32, np.float64, np.bool_)
FORMATS = ("RGB8", "BGR8", "Mono8", "BayerRG8", "BayerGB8", "RGBa8", "Mono16", "YUV422_8", "", "???")


@st.composite
def frame_arrays(draw):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.integers(0, 40)) for _ in range(ndim))
    dtype = draw(st.sampled_from(DTYPES))
    arr = np.asarray(_rng.integers(0, 255, shape)).astype(dtype) if ndim else np.array(3, dtype=dtype)
    if draw(st.booleans()) and arr.ndim >= 2 and arr.shape[1] > 1:
        arr = arr[:, ::2]  # non-contiguous view
    return arr, draw(st.sampled_from(FORMATS))


class _ArraySource:
    uri = "arrays://"

    def __init__(self, items):
        self.items = items

    def frames(self):
        for i, (arr, fmt) in enumerate(self.items):
            yield Frame(arr, i, i, "fuzz", {"pixel_format": fmt} if fmt else {})

    def close(self): ...

    def stats(self):
        return {}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(frame_arrays(), min_size=1, max_size=4), where=st.sampled_from(["capture", "inference"]))
def test_any_frame_array_gives_one_record_per_frame(toy_bundle, backend, items, where):
    items = [(np.zeros((48, 64, 3), np.uint8), "RGB8")] + items  # one good frame for reference
    pub = ListPublisher()
    options = PipelineOptions(stats_interval_s=0, drop_policy="block", preprocess_in=where)
    post = Postprocessor(toy_bundle, backend.describe())
    result = Pipeline(_ArraySource(items), backend, post, pub, make_preprocessor(toy_bundle), options).run()
    assert [r["frame_id"] for r in pub.verdicts] == list(range(len(items)))
    assert all(validate_verdict(r) == [] for r in pub.verdicts)
    assert pub.verdicts[0]["verdict"] in ("OK", "NG")
    assert result.records["total"] == len(items)
