"""Which TensorRT and GPU are here, and whether an engine from the bundle may run on them.

A serialized TensorRT engine is tied to the TensorRT version that built it and to the GPU
(model and compute capability) it was tuned on. TensorRT itself only logs an error and
returns None on a mismatch; we check the manifest first so the user reads which piece
differs and how to fix it (rebuild on the target with `clipinspect build-engine`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_runtime.deps import require
from edge_runtime.errors import BackendUnavailable, BundleError

log = logging.getLogger(__name__)

TRT_HINT = (
    "TensorRT comes with JetPack on the Jetson (apt install python3-libnvinfer) or the NVIDIA wheels on a desktop"
)
PYCUDA_HINT = "install pycuda on the target (pip install pycuda, needs the CUDA toolkit from JetPack)"


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device an engine is built for or runs on (engines are tied to both fields)."""

    name: str
    compute_capability: str  # "8.7" on Orin


def import_tensorrt(purpose: str) -> ModuleType:
    """The tensorrt module.

    Raises:
        MissingDependency: not installed; the message names `purpose` and how to get it.
    """
    return require("tensorrt", purpose=purpose, hint=TRT_HINT)


def import_cuda(purpose: str) -> ModuleType:
    """The pycuda.driver module.

    Raises:
        MissingDependency: not installed; the message names `purpose` and how to get it.
    """
    return require("pycuda.driver", purpose=purpose, hint=PYCUDA_HINT)


def trt_version(trt: ModuleType) -> str:
    """TensorRT's version string, e.g. '10.3.0' (what engines are recorded with)."""
    return str(trt.__version__)


def trt_major(trt: ModuleType) -> int:
    """TensorRT's major version (8 or 10 on JetPack 6); 10 for an unparsable dev version."""
    try:
        return int(trt_version(trt).split(".")[0])
    except ValueError:  # a dev build with an odd version string: assume current API
        return 10


# Every Jetson Orin module's GPU is called "Orin" by CUDA; the board model tells an Orin Nano
# (fewer SMs, engines tuned differently) from an AGX Orin.
JETSON_MODEL_FILE = Path("/proc/device-tree/model")


def gpu_info(cuda: ModuleType, ordinal: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device `ordinal` (pycuda.driver must be initialised).
    On a Jetson the name carries the board model, e.g. 'Orin (NVIDIA Jetson Orin Nano Developer Kit)'."""
    dev = cuda.Device(ordinal)
    major, minor = dev.compute_capability()
    name = str(dev.name())
    try:
        board = JETSON_MODEL_FILE.read_bytes().decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        board = ""
    if board and "jetson" in board.lower():
        name = f"{name} ({board})"
    return GpuInfo(name=name, compute_capability=f"{major}.{minor}")


def check_engine(entry: Any, tensorrt_version: str, gpu: GpuInfo, bundle_root: Any = "BUNDLE") -> None:
    """Refuse `entry` (an EngineEntry) unless it was built by this TensorRT for this GPU."""
    rebuild = (
        f"rebuild it on this device: clipinspect build-engine --bundle {bundle_root} --precision {entry.precision}"
    )
    if entry.tensorrt_version != tensorrt_version:
        raise BundleError(
            f"engine {entry.file} was built with TensorRT {entry.tensorrt_version} but this device has TensorRT {tensorrt_version}; {rebuild}"
        )
    if entry.compute_capability != gpu.compute_capability or entry.gpu_name != gpu.name:
        raise BundleError(
            f"engine {entry.file} was built for GPU '{entry.gpu_name}' (compute capability {entry.compute_capability}) "
            f"but this device has '{gpu.name}' (compute capability {gpu.compute_capability}); {rebuild}"
        )


def find_engine(bundle: Any, precision: str) -> Any:
    """The manifest's EngineEntry for `precision`, or BundleError saying how to build one."""
    if precision not in ("fp16", "int8"):
        raise BackendUnavailable(
            f"the trt backend runs fp16 or int8 engines, not {precision!r}; for fp32 use ort-cuda or ort-cpu"
        )
    for entry in bundle.manifest.engines:
        if entry.precision == precision:
            return entry
    have = ", ".join(e.precision for e in bundle.manifest.engines) or "none"
    raise BundleError(
        f"bundle {bundle.root} has no {precision} TensorRT engine (has: {have}); "
        f"build one on this device: clipinspect build-engine --bundle {bundle.root} --precision {precision}"
    )


def make_logger(trt: ModuleType, name: str = "tensorrt") -> Any:
    """A trt.ILogger that forwards to Python logging and keeps the errors for our messages."""
    pylog = logging.getLogger(name)

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            sev = int(severity)
            # ILogger.Severity: INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4
            if sev <= 1:
                self.errors.append(str(msg))
                pylog.error("%s", msg)
            elif sev == 2:
                pylog.warning("%s", msg)
            elif sev == 3:
                pylog.info("%s", msg)
            else:
                pylog.debug("%s", msg)

    return _Logger()


class PrimaryContext:
    """The device's primary CUDA context (the one TensorRT's runtime API uses), made current
    on the calling thread only while needed: pycuda contexts are per thread, and the
    pipeline loads the model on one thread and infers on another."""

    def __init__(self, cuda: ModuleType, ordinal: int = 0) -> None:
        cuda.init()
        self._cuda = cuda
        self.device = cuda.Device(ordinal)
        self._ctx = self.device.retain_primary_context()

    def __enter__(self) -> PrimaryContext:
        self._ctx.push()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cuda.Context.pop()

    def release(self) -> None:
        """Give back the retained primary context (once per construction)."""
        self._ctx.detach()
