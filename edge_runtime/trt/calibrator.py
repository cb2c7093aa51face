"""TensorRT INT8 entropy calibrator (implicit quantization, TensorRT 8.6; deprecated in 10
where the explicit Q/DQ ONNX from `clipinspect calibrate` is preferred).

The class derives from trt.IInt8EntropyCalibrator2, so it is made by a factory at call time:
tensorrt is imported lazily and must never be needed to import edge_runtime.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edge_runtime.errors import DataError
from edge_runtime.preprocess import normalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationInputs:
    """What the network's inputs look like during calibration."""

    image_name: str
    image_shape: tuple[int, ...]  # the full calibration shape incl. batch, NHWC or NCHW
    input_layout: str  # 'NHWC_uint8', 'NCHW_float32' or 'frame_uint8' (as the bundle's preprocess says)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    text_name: str | None = None
    text_embeddings: np.ndarray | None = None  # [2, D] float32, uploaded once


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename, so a
    reader never sees half an engine or cache."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def make_entropy_calibrator(
    trt: ModuleType, cuda: ModuleType, batches: Iterable[np.ndarray], inputs: CalibrationInputs, cache_path: Path
) -> Any:
    """An IInt8EntropyCalibrator2 feeding `batches` (uint8 NHWC, as the camera path produces them)
    and reading/writing its cache at `cache_path`. A CUDA context must be current."""
    cls = _calibrator_class(trt)
    return cls(cuda, batches, inputs, Path(cache_path))


class _Feeder:
    """The calibrator's work, independent of TensorRT's base class: one device buffer for the
    image (filled per batch, as NVIDIA's pycuda samples do), the text embeddings uploaded once,
    and the cache file."""

    def __init__(
        self, cuda: ModuleType, batches: Iterable[np.ndarray], inputs: CalibrationInputs, cache_path: Path
    ) -> None:
        self._cuda = cuda
        self._inputs = inputs
        self._batches = iter(batches)
        self.cache_path = cache_path
        self.batches_used = 0
        self.cache_was_read = False
        self._float_in = inputs.input_layout == "NCHW_float32"
        self._host = cuda.pagelocked_empty(inputs.image_shape, np.float32 if self._float_in else np.uint8)
        self._image_dev = cuda.mem_alloc(self._host.nbytes)
        self._text_dev = None
        if inputs.text_name:
            if inputs.text_embeddings is None:
                raise DataError(f"network input '{inputs.text_name}' needs the bundle's text embeddings")
            text = np.ascontiguousarray(inputs.text_embeddings, dtype=np.float32)
            self._text_dev = cuda.mem_alloc(text.nbytes)
            cuda.memcpy_htod(self._text_dev, text)

    def next_pointers(self, names: Sequence[str]) -> list[int] | None:
        """Upload the next batch; device pointers in the order of `names` (None when done)."""
        try:
            batch = next(self._batches)
        except StopIteration:
            return None
        expect = self._inputs.image_shape
        nhwc = (
            (expect[0], expect[2], expect[3], expect[1]) if self._float_in else expect
        )  # frames: as the camera sends them
        if batch.dtype != np.uint8 or tuple(batch.shape) != tuple(nhwc):
            raise DataError(f"calibration batch has shape {batch.shape} {batch.dtype}, expected {tuple(nhwc)} uint8")
        self._host[...] = normalize(batch, self._inputs.mean, self._inputs.std) if self._float_in else batch
        self._cuda.memcpy_htod(self._image_dev, self._host)
        self.batches_used += 1
        return [self._pointer(name) for name in names]

    def _pointer(self, name: str) -> int:
        if name == self._inputs.image_name:
            return int(self._image_dev)
        if name == self._inputs.text_name and self._text_dev is not None:
            return int(self._text_dev)
        raise DataError(f"the network asks for calibration input '{name}' that the bundle contract does not have")

    def read_cache(self) -> bytes | None:
        if self.cache_path.is_file():
            self.cache_was_read = True
            log.info("calibration: using cache %s (delete it to recalibrate)", self.cache_path)
            return self.cache_path.read_bytes()
        return None

    def write_cache(self, cache: Any) -> None:
        write_atomic(self.cache_path, bytes(cache))
        log.info("calibration: cache written to %s", self.cache_path)

    def free(self) -> None:
        self._image_dev.free()
        if self._text_dev is not None:
            self._text_dev.free()


def _calibrator_class(trt: ModuleType) -> type:
    """A trt.IInt8EntropyCalibrator2 subclass (made at call time: tensorrt is imported lazily)
    whose TensorRT callbacks delegate to `_Feeder`."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(
            self, cuda: ModuleType, batches: Iterable[np.ndarray], inputs: CalibrationInputs, cache_path: Path
        ) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the base initialised explicitly
            self._feeder = _Feeder(cuda, batches, inputs, cache_path)
            self._batch_size = int(inputs.image_shape[0])

        cache_path = property(lambda self: self._feeder.cache_path)
        batches_used = property(lambda self: self._feeder.batches_used)
        cache_was_read = property(lambda self: self._feeder.cache_was_read)

        def get_batch_size(self) -> int:
            return self._batch_size

        def get_batch(self, names: Sequence[str], *args: Any) -> list[int] | None:
            return self._feeder.next_pointers(names)

        def read_calibration_cache(self, *args: Any) -> bytes | None:
            return self._feeder.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            self._feeder.write_cache(cache)

        def free(self) -> None:
            self._feeder.free()

    return EntropyCalibrator
