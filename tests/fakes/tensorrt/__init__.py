"""Stand-in for the `tensorrt` Python package (tests only).

Mirrors the names, signatures and semantics clipinspect uses from TensorRT 8.6 and 10.x:
Logger/ILogger, Builder, NetworkDefinitionCreationFlag, OnnxParser, IBuilderConfig (flags,
memory pools, timing cache, optimisation and calibration profiles, int8_calibrator),
build_serialized_network, Runtime.deserialize_cuda_engine, the engine/context tensor API
(10 and 8.5+) and the bindings API (8.x, removed in 10), IInt8EntropyCalibrator2, nptype.

It enforces what real TensorRT enforces so misuse fails: ONNX parsing needs an
explicit-batch network before 10; a uint8 network input may feed only a Cast to float/half
(DataType.UINT8 docs) and Q/DQ zero points must be int8 zeros (symmetric INT8); dynamic inputs need an optimisation profile; a calibrator
must initialise its pybind base, its cache is read before any batch, and every get_batch
pointer must be a live device allocation large enough for the calibration shape; an
engine refuses to deserialise under another TensorRT version or on another GPU (logging an
error and returning None, as TensorRT does); execution needs every tensor address set and
every dynamic input shape set, reads its inputs from and writes its outputs to (fake)
device memory when the stream runs. The "engine" computes with ONNX Runtime on the ONNX it
was built from, so numbers are real. Call `_fake_configure(version)` to pick the version.
"""

from __future__ import annotations

import enum
import json
import struct
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from tests.fakes.pycuda import driver as _cuda

__version__ = "10.3.0"
_MAGIC = b"FAKETRT-ENGINE\0"
_TC_MAGIC = b"FAKETRT-TIMINGCACHE\0"


def _fake_configure(version: str = "10.3.0") -> None:
    global __version__
    __version__ = version


def _ver() -> tuple[int, int]:
    parts = __version__.split(".")
    return int(parts[0]), int(parts[1])


def _has_tensor_api() -> bool:
    return _ver() >= (8, 5)


def _has_binding_api() -> bool:
    return _ver() < (10, 0)


# -- logging ----------------------------------------------------------------------------------
class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        self._trt_base_init = True

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        raise RuntimeError("Tried to call pure virtual function ILogger::log")


class Logger(ILogger):
    def __init__(self, min_severity: ILogger.Severity = ILogger.Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        if severity <= self.min_severity:
            print(f"[TRT] [{severity.name[0]}] {msg}", file=sys.stderr)


def _check_logger(logger: Any) -> ILogger:
    if not isinstance(logger, ILogger):
        raise TypeError(
            f"__init__(): incompatible constructor arguments; expected tensorrt.ILogger, got {type(logger).__name__}"
        )
    if not getattr(logger, "_trt_base_init", False):
        raise TypeError("tensorrt.ILogger.__init__() must be called when overriding __init__")
    return logger


def _log(logger: ILogger, sev: ILogger.Severity, msg: str) -> None:
    logger.log(sev, msg)


# -- enums and small types --------------------------------------------------------------------
class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8

    @property
    def itemsize(self) -> int:
        return np.dtype(nptype(self)).itemsize


float32, float16, int8, int32, uint8, int64 = (
    DataType.FLOAT,
    DataType.HALF,
    DataType.INT8,
    DataType.INT32,
    DataType.UINT8,
    DataType.INT64,
)

_NP = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}
_FROM_ONNX = {
    1: DataType.FLOAT,
    10: DataType.HALF,
    3: DataType.INT8,
    6: DataType.INT32,
    9: DataType.BOOL,
    2: DataType.UINT8,
    7: DataType.INT64,
}


def nptype(trt_type: DataType) -> type:
    if trt_type not in _NP:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return _NP[trt_type]


def volume(shape: Sequence[int]) -> int:
    return int(np.prod(list(shape))) if len(shape) else 1


class Dims(tuple):
    """Real trt.Dims is iterable, indexable and has len(); -1 marks a dynamic dimension."""


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0  # deprecated and ignored in 10
    STRONGLY_TYPED = 1


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 5
    DISABLE_TIMING_CACHE = 6
    TF32 = 7
    SPARSE_WEIGHTS = 8
    SAFETY_SCOPE = 9
    OBEY_PRECISION_CONSTRAINTS = 10
    PREFER_PRECISION_CONSTRAINTS = 11
    DIRECT_IO = 12
    REJECT_EMPTY_ALGORITHMS = 13
    VERSION_COMPATIBLE = 14
    EXCLUDE_LEAN_RUNTIME = 15
    FP8 = 16


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4


class CalibrationAlgoType(enum.IntEnum):
    LEGACY_CALIBRATION = 0
    ENTROPY_CALIBRATION = 1
    ENTROPY_CALIBRATION_2 = 2
    MINMAX_CALIBRATION = 3


class IHostMemory(bytes):
    """Serialized engine / timing cache: supports the buffer protocol like the real one."""

    @property
    def nbytes(self) -> int:
        return len(self)


# -- calibrators ------------------------------------------------------------------------------
class IInt8Calibrator:
    def __init__(self) -> None:
        self._trt_base_init = True

    def get_algorithm(self) -> CalibrationAlgoType:
        return CalibrationAlgoType.ENTROPY_CALIBRATION_2


class IInt8EntropyCalibrator2(IInt8Calibrator):
    pass


class IInt8EntropyCalibrator(IInt8Calibrator):
    def get_algorithm(self) -> CalibrationAlgoType:
        return CalibrationAlgoType.ENTROPY_CALIBRATION


class IInt8MinMaxCalibrator(IInt8Calibrator):
    def get_algorithm(self) -> CalibrationAlgoType:
        return CalibrationAlgoType.MINMAX_CALIBRATION


def _cache_header() -> str:
    major, minor = _ver()
    return f"TRT-{major}{minor:02d}0-EntropyCalibration2"


class _IProgressMonitor:
    """trt.IProgressMonitor (TensorRT >= 10.0): phase_start / step_complete / phase_finish."""

    def __init__(self) -> None:
        self._trt_base_init = True


def __getattr__(name: str) -> Any:
    if name == "IProgressMonitor" and _ver() >= (10, 0):
        return _IProgressMonitor
    raise AttributeError(f"module 'tensorrt' has no attribute '{name}'")


# -- network and parser -----------------------------------------------------------------------
class ITensor:
    def __init__(self, name: str, shape: Sequence[int], dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, Dims(shape), dtype

    @property
    def is_network_input(self) -> bool:
        return True


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._onnx: bytes | None = None
        self._qdq = False
        self._ops: list[str] = []

    @property
    def has_explicit_batch_dimension(self) -> bool:
        return _ver() >= (10, 0) or bool(self.flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH))

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, i: int) -> ITensor:
        return self._inputs[i]

    def get_output(self, i: int) -> ITensor:
        return self._outputs[i]


class ErrorCode(enum.IntEnum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


class ParserError:
    def __init__(
        self, code: ErrorCode, desc: str, node: int = -1, node_name: str = "", op: str = "", func: str = "parse"
    ) -> None:
        self._code, self._desc, self._node, self._node_name, self._op, self._func = (
            code,
            desc,
            node,
            node_name,
            op,
            func,
        )

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._node_name

    def node_operator(self) -> str:
        return self._op

    def func(self) -> str:
        return self._func

    def file(self) -> str:
        return "ModelImporter.cpp"

    def line(self) -> int:
        return 0

    def __str__(self) -> str:
        where = (
            f"In node {self._node} with name: {self._node_name} and operator: {self._op} " if self._node >= 0 else ""
        )
        return f"{where}({self._func}): {self._code.name}: {self._desc}"


# ONNX ops with an importer in onnx-tensorrt (docs/operators.md "Y" rows, plus those added
# by 8.6/10: LayerNormalization, GroupNormalization, Reciprocal, Mod, NonZero, OneHot, ...).
# Anything else, or a node in a custom domain, is reported the way TensorRT reports it.
_SUPPORTED = set(
    """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GRU HardSigmoid Identity If ImageScaler InstanceNormalization
IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min
Mul Neg NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform RandomUniformLike
Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN Round ScaledTanh Scan Scatter ScatterElements ScatterND
Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where Xor
LayerNormalization GroupNormalization Reciprocal Mod NonZero OneHot Trilu GridSample IsInf HardSwish Mish
""".split()
)


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self._network = network
        self._logger = _check_logger(logger)
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse_from_file(self, model: str) -> bool:
        with open(model, "rb") as f:
            return self.parse(f.read(), path=model)

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx

        if not isinstance(model, (bytes, bytearray, memoryview)):
            raise TypeError("parse(): incompatible function arguments (model must be a buffer)")
        if not self._network.has_explicit_batch_dimension:
            self._errors.append(
                ParserError(
                    ErrorCode.INVALID_VALUE, "The ONNX parser only supports networks with an explicit batch dimension"
                )
            )
            return False
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as exc:
            self._errors.append(
                ParserError(
                    ErrorCode.MODEL_DESERIALIZE_FAILED,
                    f"Failed to parse ONNX model from file: {path} ({type(exc).__name__})",
                )
            )
            return False
        if not proto.graph.node:
            self._errors.append(
                ParserError(ErrorCode.MODEL_DESERIALIZE_FAILED, f"Failed to parse ONNX model from file: {path}")
            )
            return False
        for i, node in enumerate(proto.graph.node):
            if node.domain not in ("", "ai.onnx") or node.op_type not in _SUPPORTED:
                self._errors.append(
                    ParserError(
                        ErrorCode.UNSUPPORTED_NODE,
                        f"No importer registered for op: {node.op_type}",
                        i,
                        node.name,
                        node.op_type,
                        "importNode",
                    )
                )
        if self._errors:
            return False
        inits = {t.name: t for t in proto.graph.initializer}
        self._check_uint8_inputs(proto, inits)
        if self._errors:
            return False
        for i, node in enumerate(proto.graph.node):
            # TensorRT quantizes symmetrically to INT8: zero points must be int8 zeros.
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
                zp = inits.get(node.input[2])
                if zp is None:
                    self._errors.append(
                        ParserError(
                            ErrorCode.INVALID_NODE,
                            "Assertion failed: zero point must be an initializer",
                            i,
                            node.name,
                            node.op_type,
                            "QuantDequantLinearHelper",
                        )
                    )
                    continue
                from onnx import numpy_helper

                arr = numpy_helper.to_array(zp)
                if arr.dtype != np.int8:
                    self._errors.append(
                        ParserError(
                            ErrorCode.UNSUPPORTED_NODE,
                            f"Assertion failed: Only INT8 quantization is supported (zero point {node.input[2]} is {arr.dtype})",
                            i,
                            node.name,
                            node.op_type,
                            "QuantDequantLinearHelper",
                        )
                    )
                elif np.any(arr != 0):
                    self._errors.append(
                        ParserError(
                            ErrorCode.INVALID_NODE,
                            'Assertion failed: shiftIsAllZeros(zeroPoint) && "TensorRT only supports symmetric quantization. The zero point for the QuantizeLinear/DequantizeLinear operator must be all zeros."',
                            i,
                            node.name,
                            node.op_type,
                            "QuantDequantLinearHelper",
                        )
                    )
        if self._errors:
            return False
        net = self._network
        for vi in proto.graph.input:
            if vi.name in inits:
                continue
            if vi.type.tensor_type.elem_type == 2 and _ver() < (8, 5):  # UINT8 I/O arrived in TensorRT 8.5
                self._errors.append(
                    ParserError(
                        ErrorCode.UNSUPPORTED_GRAPH,
                        f"Unsupported ONNX data type: UINT8 (2) (input {vi.name})",
                        func="importInput",
                    )
                )
                return False
            net._inputs.append(ITensor(vi.name, _onnx_shape(vi), _FROM_ONNX[vi.type.tensor_type.elem_type]))
        for vi in proto.graph.output:
            net._outputs.append(ITensor(vi.name, _onnx_shape(vi), _FROM_ONNX[vi.type.tensor_type.elem_type]))
        net._onnx = bytes(model)
        net._qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)
        net._ops = [n.op_type for n in proto.graph.node]
        return True

    def _check_uint8_inputs(self, proto: Any, inits: dict) -> None:
        """TensorRT's DataType.UINT8 rule (Python API docs, 'UINT8'): a uint8 network input
        must be converted to float32/float16 (a Cast, or an IdentityLayer) before any other
        layer uses it; uint8 conversions to int8/int32/bool are not supported."""
        uint8_inputs = {
            vi.name for vi in proto.graph.input if vi.name not in inits and vi.type.tensor_type.elem_type == 2
        }
        for i, node in enumerate(proto.graph.node):
            for name in node.input:
                if name not in uint8_inputs:
                    continue
                if node.op_type not in ("Cast", "Identity"):
                    self._errors.append(
                        ParserError(
                            ErrorCode.UNSUPPORTED_NODE,
                            f"UINT8 tensor '{name}' feeds a {node.op_type} node: a uint8 network input may only be converted to FLOAT/HALF (Cast) before other layers use it",
                            i,
                            node.name,
                            node.op_type,
                            "importNode",
                        )
                    )
                elif node.op_type == "Cast":
                    to = next((a.i for a in node.attribute if a.name == "to"), None)
                    if to not in (1, 10):  # onnx FLOAT, FLOAT16
                        self._errors.append(
                            ParserError(
                                ErrorCode.UNSUPPORTED_NODE,
                                f"Cast of UINT8 tensor '{name}' to ONNX type {to}: uint8 converts only to FLOAT or HALF",
                                i,
                                node.name,
                                node.op_type,
                                "importNode",
                            )
                        )


def _onnx_shape(vi: Any) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]


# -- builder ----------------------------------------------------------------------------------
class IOptimizationProfile:
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
        lo, op, hi = Dims(min), Dims(opt), Dims(max)
        if (
            not (len(lo) == len(op) == len(hi))
            or any(not (a <= b <= c) for a, b, c in zip(lo, op, hi))
            or any(d < 0 for d in lo)
        ):
            raise ValueError(f"set_shape: need 0 <= min <= opt <= max for '{input}', got {lo} {op} {hi}")
        self._shapes[input] = (lo, op, hi)

    def get_shape(self, input: str) -> list[Dims]:
        return list(self._shapes[input])

    def __bool__(self) -> bool:
        return bool(self._shapes)


class ITimingCache:
    def __init__(self, entries: dict[str, float]) -> None:
        self._entries = dict(entries)

    def serialize(self) -> IHostMemory:
        body = json.dumps({"version": __version__, "gpu": _gpu(), "entries": self._entries}, sort_keys=True).encode()
        return IHostMemory(_TC_MAGIC + body)

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._entries.update(input_cache._entries)
        return True

    def reset(self) -> bool:
        self._entries.clear()
        return True


def _gpu() -> dict[str, Any]:
    st = _cuda._fake_state()
    name, cc, _ = st.devices[0]
    return {"name": name, "cc": list(cc)}


class IBuilderConfig:
    def __init__(self, logger: ILogger) -> None:
        self._logger = logger
        self._flags: set[BuilderFlag] = set()
        self._pools: dict[MemoryPoolType, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._calib_profile: IOptimizationProfile | None = None
        self._calibrator: IInt8Calibrator | None = None
        self._timing_cache: ITimingCache | None = None
        self._monitor: Any = None

    @property
    def progress_monitor(self) -> Any:
        if _ver() < (10, 0):
            raise AttributeError("'tensorrt.IBuilderConfig' object has no attribute 'progress_monitor'")
        return self._monitor

    @progress_monitor.setter
    def progress_monitor(self, monitor: Any) -> None:
        if _ver() < (10, 0):
            raise AttributeError("'tensorrt.IBuilderConfig' object has no attribute 'progress_monitor'")
        if not isinstance(monitor, _IProgressMonitor) or not getattr(monitor, "_trt_base_init", False):
            raise TypeError("progress_monitor: expected a tensorrt.IProgressMonitor whose __init__ was called")
        self._monitor = monitor

    def set_flag(self, flag: BuilderFlag) -> None:
        self._flags.add(BuilderFlag(flag))

    def clear_flag(self, flag: BuilderFlag) -> None:
        self._flags.discard(BuilderFlag(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        return BuilderFlag(flag) in self._flags

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        if not isinstance(pool, MemoryPoolType) or int(pool_size) < 0:
            raise TypeError("set_memory_pool_limit(): incompatible function arguments")
        self._pools[pool] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self._pools.get(pool, 8 << 30)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not profile:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
        if not profile:
            return False
        self._calib_profile = profile
        return True

    def get_calibration_profile(self) -> IOptimizationProfile | None:
        return self._calib_profile

    @property
    def int8_calibrator(self) -> IInt8Calibrator | None:
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calib: IInt8Calibrator | None) -> None:
        if calib is not None:
            if not isinstance(calib, IInt8Calibrator):
                raise TypeError("int8_calibrator: incompatible type; expected tensorrt.IInt8Calibrator")
            if not getattr(calib, "_trt_base_init", False):
                raise TypeError(
                    f"tensorrt.{type(calib).__mro__[1].__name__}.__init__() must be called when overriding __init__"
                )
        self._calibrator = calib

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        data = bytes(serialized_timing_cache)
        if not data:
            return ITimingCache({})
        if not data.startswith(_TC_MAGIC):
            _log(self._logger, ILogger.WARNING, "Could not deserialize timing cache; starting from an empty cache")
            return ITimingCache({})
        body = json.loads(data[len(_TC_MAGIC) :])
        cache = ITimingCache(body["entries"])
        cache._origin = (body["version"], body["gpu"])
        return cache

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        origin = getattr(cache, "_origin", None)
        if origin is not None and (origin[0] != __version__ or origin[1] != _gpu()) and not ignore_mismatch:
            _log(self._logger, ILogger.ERROR, "Timing cache was created for a different TensorRT version or device")
            return False
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._timing_cache


class Builder:
    def __init__(self, logger: ILogger) -> None:
        self._logger = _check_logger(logger)

    @property
    def platform_has_fast_fp16(self) -> bool:
        return _gpu()["cc"] >= [5, 3]

    @property
    def platform_has_fast_int8(self) -> bool:
        return _gpu()["cc"] >= [6, 1]

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(int(flags))

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self._logger)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        err = lambda m: (_log(self._logger, ILogger.ERROR, m), None)[1]  # noqa: E731
        if network._onnx is None:
            return err("Network must have at least one output")
        dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
        if dynamic and not config._profiles:
            return err(
                f"Network has dynamic or shape inputs, but no optimization profile has been defined. ({dynamic[0].name})"
            )
        for p in config._profiles:
            for t in dynamic:
                if t.name not in p._shapes:
                    return err(f"{t.name}: dynamic input is missing dimensions in profile 0.")
            for t in network._inputs:
                if t.name in p._shapes:
                    for s in p._shapes[t.name]:
                        if len(s) != len(t.shape) or any(d >= 0 and d != v for d, v in zip(t.shape, s)):
                            return err(f"{t.name}: profile shape {s} does not match network input {t.shape}")
        int8 = BuilderFlag.INT8 in config._flags
        calib_amax: dict[str, str] = {}
        calibrated = False
        if int8 and not network._qdq:
            if config._calibrator is None:
                _log(
                    self._logger,
                    ILogger.WARNING,
                    "Calibrator is not being used. Users must provide dynamic range for all tensors that are not Int32 or Bool.",
                )
            else:
                result = self._calibrate(network, config)
                if result is None:
                    return None
                calib_amax, calibrated = result, True
        elif int8 and config._calibrator is not None:
            _log(
                self._logger,
                ILogger.WARNING,
                "Calibrator won't be used in explicit precision mode. Use quantization aware training to generate network with Quantize/Dequantize nodes.",
            )
        mon = config._monitor
        if mon is not None:
            mon.phase_start("Building engine", None, 2)
            for step, phase in enumerate(("Tactic selection", "Serialization")):
                mon.phase_start(phase, "Building engine", 1)
                if not mon.step_complete(phase, 0):
                    return err("Build cancelled by the progress monitor")
                mon.phase_finish(phase)
                if not mon.step_complete("Building engine", step):
                    return err("Build cancelled by the progress monitor")
            mon.phase_finish("Building engine")
        # Timing: one entry per (op, precision) "tactic"; a loaded cache avoids re-timing.
        cache = config._timing_cache or ITimingCache({})
        hits = 0
        precision = "int8" if int8 else ("fp16" if BuilderFlag.FP16 in config._flags else "fp32")
        for i, op in enumerate(network._ops):
            key = f"{op}:{i}:{precision}"
            if key in cache._entries:
                hits += 1
            else:
                cache._entries[key] = 0.01 * (i + 1)
        if config._timing_cache is None and BuilderFlag.DISABLE_TIMING_CACHE not in config._flags:
            config._timing_cache = cache
        _log(self._logger, ILogger.INFO, f"Timing cache: {hits} hits, {len(network._ops) - hits} misses")
        profiles = [{n: [list(s) for s in shapes] for n, shapes in p._shapes.items()} for p in config._profiles]
        header = {
            "version": __version__,
            "gpu": _gpu(),
            "flags": sorted(f.name for f in config._flags),
            "workspace": config.get_memory_pool_limit(MemoryPoolType.WORKSPACE),
            "qdq": network._qdq,
            "calibrated": calibrated,
            "calib_amax": calib_amax,
            "timing_cache_hits": hits,
            "inputs": [[t.name, list(t.shape), int(t.dtype)] for t in network._inputs],
            "outputs": [[t.name, list(t.shape), int(t.dtype)] for t in network._outputs],
            "profiles": profiles,
        }
        h = json.dumps(header).encode()
        return IHostMemory(_MAGIC + struct.pack("<I", len(h)) + h + network._onnx)

    def _calibrate(self, network: INetworkDefinition, config: IBuilderConfig) -> dict[str, str] | None:
        calib = config._calibrator
        err = lambda m: (_log(self._logger, ILogger.ERROR, m), None)[1]  # noqa: E731
        cache = calib.read_calibration_cache()  # TensorRT asks for the cache before any batch
        if cache:
            text = bytes(cache).decode("ascii", "replace").splitlines()
            if text and text[0] == _cache_header():
                return dict(line.split(": ", 1) for line in text[1:] if ": " in line)
            _log(self._logger, ILogger.WARNING, "Calibration cache version mismatch; recalibrating")
        batch_size = calib.get_batch_size()
        if not isinstance(batch_size, int) or batch_size < 1:
            return err(f"Calibrator batch size must be a positive integer, got {batch_size!r}")
        profile = config._calib_profile or (config._profiles[0] if config._profiles else None)
        shapes = {}
        for t in network._inputs:
            if all(d >= 0 for d in t.shape):
                shapes[t.name] = (tuple(t.shape), t.dtype)
            elif profile is not None and t.name in profile._shapes:
                shapes[t.name] = (tuple(profile._shapes[t.name][1]), t.dtype)
            else:
                return err(f"Calibration profile missing for dynamic input {t.name}")
        names = [t.name for t in network._inputs]
        amax: dict[str, float] = {n: 0.0 for n in names}
        batches = 0
        while True:
            ptrs = calib.get_batch(names)
            if not ptrs:
                break
            if len(ptrs) != len(names):
                return err(f"get_batch returned {len(ptrs)} pointers for {len(names)} inputs")
            for name, ptr in zip(names, ptrs):
                shape, dt = shapes[name]
                nbytes = volume(shape) * np.dtype(nptype(dt)).itemsize
                try:
                    raw = _cuda._fake_device_view(int(ptr), nbytes)
                except _cuda.LogicError as exc:
                    return err(f"Calibration failure: input '{name}': {exc}")
                arr = raw.view(nptype(dt)).astype(np.float64)
                amax[name] = max(amax[name], float(np.abs(arr).max()) if arr.size else 0.0)
            batches += 1
        if batches == 0:
            return err(
                "Calibration failure occurred with no scaling factors detected. This could be due to no int8 calibrator or insufficient custom scales for network layers."
            )
        lines = [_cache_header()] + [f"{n}: {struct.pack('>f', v / 127.0).hex()}" for n, v in amax.items()]
        calib.write_calibration_cache(memoryview(("\n".join(lines) + "\n").encode()))
        _log(self._logger, ILogger.INFO, f"Calibrated with {batches} batches")
        return {n: struct.pack(">f", v / 127.0).hex() for n, v in amax.items()}


# -- runtime ----------------------------------------------------------------------------------
class Runtime:
    def __init__(self, logger: ILogger) -> None:
        self._logger = _check_logger(logger)

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        if not data.startswith(_MAGIC):
            _log(
                self._logger,
                ILogger.ERROR,
                "1: [runtime.cpp::parsePlan::314] Error Code 1: Serialization (Serialization assertion plan->header.magicTag == rt::kPLAN_MAGIC_TAG failed.)",
            )
            return None
        (n,) = struct.unpack("<I", data[len(_MAGIC) : len(_MAGIC) + 4])
        header = json.loads(data[len(_MAGIC) + 4 : len(_MAGIC) + 4 + n])
        onnx_bytes = data[len(_MAGIC) + 4 + n :]
        if header["version"] != __version__:
            _log(
                self._logger,
                ILogger.ERROR,
                f"6: The engine plan file is not compatible with this version of TensorRT, expecting library version {__version__} got {header['version']}, please rebuild.",
            )
            return None
        if header["gpu"]["cc"] != _gpu()["cc"]:
            _log(
                self._logger,
                ILogger.ERROR,
                "6: The engine plan file is generated on an incompatible device, expecting compute {} got compute {}, please rebuild.".format(
                    ".".join(map(str, _gpu()["cc"])), ".".join(map(str, header["gpu"]["cc"]))
                ),
            )
            return None
        if header["gpu"]["name"] != _gpu()["name"]:
            _log(
                self._logger,
                ILogger.WARNING,
                "Using an engine plan file across different models of devices is not recommended and is likely to affect performance or even cause errors.",
            )
        return _make_engine(header, onnx_bytes, self._logger)


def _make_engine(header: dict, onnx_bytes: bytes, logger: ILogger) -> ICudaEngine:
    bases: list[type] = []
    if _has_tensor_api():
        bases.append(_EngineTensorAPI)
    if _has_binding_api():
        bases.append(_EngineBindingAPI)
    cls = type("ICudaEngine", tuple(bases) + (ICudaEngine,), {})
    return cls(header, onnx_bytes, logger)


class ICudaEngine:
    def __init__(self, header: dict, onnx_bytes: bytes, logger: ILogger) -> None:
        self._h, self._onnx, self._logger = header, onnx_bytes, logger
        self._io = [(n, s, DataType(d), TensorIOMode.INPUT) for n, s, d in header["inputs"]] + [
            (n, s, DataType(d), TensorIOMode.OUTPUT) for n, s, d in header["outputs"]
        ]
        self._session = None
        self.contexts_created = 0

    @property
    def num_optimization_profiles(self) -> int:
        return max(1, len(self._h["profiles"]))

    def _find(self, name: str) -> tuple:
        for t in self._io:
            if t[0] == name:
                return t
        raise KeyError(name)

    def _profile(self, name: str, index: int) -> list[Dims]:
        prof = self._h["profiles"][index] if self._h["profiles"] else {}
        if name in prof:
            return [Dims(s) for s in prof[name]]
        s = Dims(self._find(name)[1])
        return [s, s, s]

    def create_execution_context(self) -> IExecutionContext:
        self.contexts_created += 1
        bases: list[type] = []
        if _has_tensor_api():
            bases.append(_ContextTensorAPI)
        if _has_binding_api():
            bases.append(_ContextBindingAPI)
        cls = type("IExecutionContext", tuple(bases) + (IExecutionContext,), {})
        return cls(self)

    def serialize(self) -> IHostMemory:
        h = json.dumps(self._h).encode()
        return IHostMemory(_MAGIC + struct.pack("<I", len(h)) + h + self._onnx)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        if self._session is None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            self._session = ort.InferenceSession(self._onnx, so, providers=["CPUExecutionProvider"])
        names = [o.name for o in self._session.get_outputs()]
        outs = self._session.run(names, feeds)
        reduced = "FP16" in self._h["flags"]
        # Reduced-precision engines do not reproduce FP32 bit for bit: round like FP16 would.
        return {
            n: (o.astype(np.float16).astype(o.dtype) if reduced and o.dtype == np.float32 else o)
            for n, o in zip(names, outs)
        }


class _EngineTensorAPI:
    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    def get_tensor_name(self, index: int) -> str:
        return self._io[index][0]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._find(name)[3]

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._find(name)[1])

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._find(name)[2]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        return self._profile(name, profile_index)


class _EngineBindingAPI:
    @property
    def num_bindings(self) -> int:
        return len(self._io)

    def get_binding_name(self, index: int) -> str:
        return self._io[index][0]

    def get_binding_index(self, name: str) -> int:
        return [t[0] for t in self._io].index(name)

    def binding_is_input(self, index: int) -> bool:
        return self._io[index][3] == TensorIOMode.INPUT

    def get_binding_shape(self, index: int) -> Dims:
        return Dims(self._io[index][1])

    def get_binding_dtype(self, index: int) -> DataType:
        return self._io[index][2]

    def get_profile_shape(self, profile_index: int, binding: int) -> list[Dims]:
        return self._profile(self._io[binding][0], profile_index)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self._addr: dict[str, int] = {}
        self._shapes: dict[str, Dims] = {
            n: Dims(s) for n, s, _, m in engine._io if m == TensorIOMode.INPUT and all(d >= 0 for d in s)
        }
        self.executions = 0
        self._cuda_state = _cuda._fake_state()

    def __del__(self) -> None:
        # Real TensorRT frees the context's device memory here through the CUDA runtime; once
        # the primary context is gone (no retain left) that fails with this error in the log.
        st = self._cuda_state
        if st.initialized and not any(ctx.retained > 0 for ctx in st.primary.values()):
            st.stats["late_destroy"] = st.stats.get("late_destroy", 0) + 1
            _log(
                self.engine._logger,
                ILogger.ERROR,
                "1: [defaultAllocator.cpp::deallocate] Error Code 1: Cuda Runtime (context is destroyed)",
            )

    def _set_shape(self, name: str, shape: Sequence[int]) -> bool:
        lo, _, hi = self.engine._profile(name, 0)
        s = Dims(int(d) for d in shape)
        if len(s) != len(lo) or any(not (a <= b <= c) for a, b, c in zip(lo, s, hi)):
            _log(
                self.engine._logger,
                ILogger.ERROR,
                f"3: [executionContext.cpp::setInputShape] Error Code 3: API Usage Error (Parameter check failed: {name} shape {tuple(s)} outside profile [{tuple(lo)}, {tuple(hi)}])",
            )
            return False
        self._shapes[name] = s
        return True

    def _out_shape(self, name: str) -> Dims:
        shape = self.engine._find(name)[1]
        img = [v for n, v in self._shapes.items() if any(d < 0 for d in self.engine._find(n)[1])]
        batch = img[0][0] if img else -1
        return Dims(batch if d < 0 else d for d in shape)

    def _enqueue(self, addresses: dict[str, int], stream_handle: int) -> bool:
        e = self.engine
        for name, _, _dt, mode in e._io:
            if name not in addresses or not addresses[name]:
                _log(
                    e._logger,
                    ILogger.ERROR,
                    f"3: [executionContext.cpp::enqueueV3] Error Code 3: API Usage Error (Parameter check failed, condition: mContext.profileObliviousBindings.at(profileObliviousIndex) || getPtrOrNull(mOutputAllocators, profileObliviousIndex). Address is not set for {'input' if mode == TensorIOMode.INPUT else 'output'} tensor {name}. Call setInputTensorAddress or setTensorAddress before enqueue/execute.)",
                )
                return False
            if mode == TensorIOMode.INPUT and name not in self._shapes:
                _log(
                    e._logger,
                    ILogger.ERROR,
                    f"3: Error Code 3: API Usage Error (Parameter check failed: input shape of {name} not specified. Call setInputShape first.)",
                )
                return False
        try:
            stream = _cuda._fake_stream(int(stream_handle))
        except _cuda.LogicError as exc:
            _log(e._logger, ILogger.ERROR, str(exc))
            return False
        shapes = {n: tuple(s) for n, s in self._shapes.items()}
        outs = {n: tuple(self._out_shape(n)) for n, _, _, m in e._io if m == TensorIOMode.OUTPUT}
        addr = dict(addresses)

        def run() -> None:  # executes when the stream runs, reading whatever device memory holds then
            feeds = {}
            for name, _, dt, mode in e._io:
                if mode == TensorIOMode.INPUT:
                    nbytes = volume(shapes[name]) * np.dtype(nptype(dt)).itemsize
                    feeds[name] = (
                        _cuda._fake_device_view(addr[name], nbytes).view(nptype(dt)).reshape(shapes[name]).copy()
                    )
            results = e._run(feeds)
            for name, _, dt, mode in e._io:
                if mode == TensorIOMode.OUTPUT:
                    val = np.ascontiguousarray(results[name].astype(nptype(dt)).reshape(outs[name]))
                    _cuda._fake_device_view(addr[name], val.nbytes)[...] = val.reshape(-1).view(np.uint8)

        self.executions += 1
        stream._enqueue(run) if stream is not None else run()
        return True


class _ContextTensorAPI:
    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.engine._find(name)
        self._addr[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addr.get(name, 0)

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        if self.engine._find(name)[3] != TensorIOMode.INPUT:
            return False
        return self._set_shape(name, shape)

    def get_tensor_shape(self, name: str) -> Dims:
        t = self.engine._find(name)
        if t[3] == TensorIOMode.INPUT:
            return self._shapes.get(name, Dims(t[1]))
        return self._out_shape(name)

    def execute_async_v3(self, stream_handle: int) -> bool:
        return self._enqueue(self._addr, stream_handle)


class _ContextBindingAPI:
    def set_binding_shape(self, binding: int, shape: Sequence[int]) -> bool:
        name, _, _, mode = self.engine._io[binding]
        if mode != TensorIOMode.INPUT:
            return False
        return self._set_shape(name, shape)

    def get_binding_shape(self, binding: int) -> Dims:
        name, s, _, mode = self.engine._io[binding]
        return self._shapes.get(name, Dims(s)) if mode == TensorIOMode.INPUT else self._out_shape(name)

    def execute_async_v2(self, bindings: Sequence[int], stream_handle: int) -> bool:
        if len(bindings) != len(self.engine._io):
            _log(
                self.engine._logger,
                ILogger.ERROR,
                f"bindings has {len(bindings)} entries, engine has {len(self.engine._io)}",
            )
            return False
        return self._enqueue({t[0]: int(b) for t, b in zip(self.engine._io, bindings)}, stream_handle)
