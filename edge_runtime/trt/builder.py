"""Build a TensorRT engine from a bundle's ONNX, ON the target, and record it in the manifest.

Mirrors NVIDIA's samples (efficientdet/build_engine.py) and trtexec: explicit-batch network,
ONNX parser with every error reported, builder config with workspace limit and precision
flags, optional timing cache, an optimisation profile when the batch is dynamic, INT8 either
from the bundle's Q/DQ ONNX (explicit quantization, preferred; implicit calibrators are
deprecated in TensorRT 10) or from an entropy calibrator over normal images (TensorRT 8.6).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from edge_runtime.bundle import Bundle, EngineEntry, load_bundle, sha256_file, with_file, write_manifest
from edge_runtime.errors import BackendUnavailable, BundleError, ConfigError
from edge_runtime.trt import compat
from edge_runtime.trt.calibrator import CalibrationInputs, make_entropy_calibrator, write_atomic

log = logging.getLogger(__name__)

IMAGE, TEXT = "image", "text_embeddings"


@dataclass(frozen=True)
class BuildOptions:
    """What build-engine was asked for (validated on construction).

    Attributes:
        precision: 'fp16' or 'int8'.
        onnx: which ONNX to parse, 'fp32' or the 'int8' Q/DQ variant (None: the Q/DQ one when
            the bundle has it and no calibration images were given).
        workspace_mb: builder workspace limit.
        timing_cache: file to load the timing cache from and save it to.
        max_batch, opt_batch: the optimisation profile's batch range (dynamic-batch ONNX only).
        calib_batch: batch size of the INT8 calibrator.

    Raises:
        ConfigError: a value out of range or a combination that cannot build.
    """

    precision: Literal["fp16", "int8"]
    onnx: Literal["fp32", "int8"] | None = None  # None: int8 Q/DQ variant if the bundle has one
    workspace_mb: int = 1024
    timing_cache: Path | None = None
    max_batch: int = 1  # used only when the ONNX batch is dynamic
    opt_batch: int = 1
    calib_batch: int = 8

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "int8"):
            raise ConfigError(f"--precision must be fp16 or int8, got {self.precision!r}")
        if self.workspace_mb < 1:
            raise ConfigError(f"--workspace must be >= 1 MB, got {self.workspace_mb}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"need 1 <= --opt-batch <= --max-batch, got {self.opt_batch} and {self.max_batch}")
        if self.calib_batch < 1:
            raise ConfigError(f"--calib-batch must be >= 1, got {self.calib_batch}")
        if self.precision == "fp16" and self.onnx == "int8":
            raise ConfigError("--onnx int8 (the Q/DQ model) only builds an int8 engine; use --precision int8")


@dataclass(frozen=True)
class CalibrationSet:
    """Normal images for the calibrator: `make_batches(batch_size)` yields uint8 NHWC batches
    (see edge_runtime.trt.calib_data.ImageBatches); `sha256` identifies the set."""

    make_batches: Callable[[int], Iterable[np.ndarray]]
    sha256: str


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: the re-loaded bundle, its new engine entry, the equivalent
    trtexec line and whether an existing calibration cache was reused."""

    bundle: Bundle
    entry: EngineEntry
    trtexec: str
    used_calibration_cache: bool = False


def engine_file_name(precision: str) -> str:
    """The engine's file name in the bundle, e.g. 'model.fp16.engine'."""
    return f"model.{precision}.engine"


def build_engine(bundle: Bundle, opts: BuildOptions, calibration: CalibrationSet | None = None) -> BuildResult:
    """Build, write `model.<precision>.engine` into the bundle and record it in the manifest."""
    trt = compat.import_tensorrt("building TensorRT engines")
    cuda = compat.import_cuda("building TensorRT engines (GPU identity, INT8 calibration buffers)")
    source = _choose_onnx(bundle, opts, calibration, compat.trt_major(trt))
    onnx_path = bundle.model_path(source)
    ctx = compat.PrimaryContext(cuda)
    try:
        with ctx:
            gpu = compat.gpu_info(cuda)
            return _build(trt, cuda, bundle, opts, calibration, source, onnx_path, gpu)
    finally:
        ctx.release()


def _choose_onnx(bundle: Bundle, opts: BuildOptions, calibration: CalibrationSet | None, major: int) -> str:
    if opts.precision == "fp16":
        if calibration is not None:
            raise ConfigError("--calib-images is for --precision int8 (an fp16 engine needs no calibration)")
        return "fp32"
    has_qdq = any(v.precision == "int8" for v in bundle.manifest.variants)
    # Calibration images ask for implicit calibration of the fp32 ONNX; otherwise the Q/DQ model.
    choice = opts.onnx or ("fp32" if calibration is not None or not has_qdq else "int8")
    if choice == "int8":
        if calibration is not None:
            raise ConfigError(
                "--onnx int8 is already quantized (Q/DQ); drop --calib-images, or use --onnx fp32 to calibrate in TensorRT"
            )
        bundle.model_path("int8")  # raises naming what the bundle has
        return "int8"
    if calibration is None:
        raise ConfigError(
            "an int8 engine from the fp32 ONNX needs calibration images (--calib-images DIR); "
            "or run 'clipinspect calibrate' for a Q/DQ model and build with --onnx int8"
        )
    if major >= 10:
        log.warning(
            "TensorRT %d deprecates implicit INT8 calibration; prefer the bundle's Q/DQ model (--onnx int8)", major
        )
    return "fp32"


@dataclass
class _Network:
    """Step 1's result. The parser stays referenced until the build: the network uses weights it owns."""

    builder: Any
    network: Any
    parser: Any
    logger: Any
    inputs: dict[str, tuple[int, ...]]


@dataclass
class _Config:
    """Step 2's result: the builder config and what it was given."""

    config: Any
    build_flags: list[str]
    shapes: dict[str, tuple[tuple[int, ...], ...]]  # optimisation profile: name -> (min, opt, max)
    timing_cache: Any


def _build(
    trt: ModuleType,
    cuda: ModuleType,
    bundle: Bundle,
    opts: BuildOptions,
    calibration: CalibrationSet | None,
    source: str,
    onnx_path: Path,
    gpu: compat.GpuInfo,
) -> BuildResult:
    """Polygraphy-style, one named step per loader: network from ONNX -> builder config and
    optimisation profile -> calibrator (implicit INT8 only) -> build and serialise -> record."""
    version = compat.trt_version(trt)
    net = _network_from_onnx(trt, onnx_path, version)
    cfg = _builder_config(trt, net, opts, onnx_path)
    calibrator, cache_name = None, ""
    if opts.precision == "int8" and source == "fp32":
        assert calibration is not None  # _choose_onnx demands it
        cache_name = (
            f"calib-trt{version}-{calibration.sha256[:12]}.cache"  # caches are per TensorRT version and image set
        )
        calibrator = _entropy_calibrator(trt, cuda, net, cfg, bundle, opts, calibration, bundle.path(cache_name))
    log.info(
        "building %s engine from %s with TensorRT %s on %s (sm %s); this takes minutes on a Jetson",
        opts.precision,
        onnx_path.name,
        version,
        gpu.name,
        gpu.compute_capability,
    )
    serialized = _build_serialized(
        trt,
        net,
        cfg,
        calibrator,
        f"TensorRT {version} failed to build the {opts.precision} engine from {onnx_path.name}",
    )
    engine_name = engine_file_name(opts.precision)
    write_atomic(bundle.path(engine_name), serialized)
    if cfg.timing_cache is not None and opts.timing_cache is not None:
        write_atomic(Path(opts.timing_cache), bytes(cfg.config.get_timing_cache().serialize()))
        log.info("timing cache saved to %s", opts.timing_cache)
    if calibrator is not None and not bundle.path(cache_name).is_file():
        raise BundleError(f"TensorRT did not write the calibration cache {bundle.path(cache_name)}")
    entry = _engine_entry(
        bundle, opts, source, version, gpu, engine_name, cfg, cache_name if calibrator is not None else "", calibration
    )
    new_bundle = record_engine(bundle, entry)
    cmd = trtexec_command(bundle.root, onnx_path.name, entry, cfg.shapes, opts, source)
    used_cache = bool(getattr(calibrator, "cache_was_read", False))
    return BuildResult(bundle=new_bundle, entry=entry, trtexec=cmd, used_calibration_cache=used_cache)


def _network_from_onnx(trt: ModuleType, onnx_path: Path, version: str) -> _Network:
    """Step 1: an explicit-batch network parsed from the ONNX file, every parser error reported."""
    logger = compat.make_logger(trt)
    builder = trt.Builder(logger)
    # EXPLICIT_BATCH is required by the ONNX parser before TensorRT 10, deprecated (and implied) since.
    flags = 0 if compat.trt_major(trt) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), path=str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BundleError(
            f"TensorRT {version} cannot parse {onnx_path} ({len(errors)} error(s)): "
            + " | ".join(errors or logger.errors or ["no detail"])
        )
    inputs = {
        network.get_input(i).name: tuple(int(d) for d in network.get_input(i).shape) for i in range(network.num_inputs)
    }
    if IMAGE not in inputs:
        raise BundleError(f"{onnx_path} has no input named '{IMAGE}' (inputs: {', '.join(inputs)})")
    return _Network(builder, network, parser, logger, inputs)


def _builder_config(trt: ModuleType, net: _Network, opts: BuildOptions, onnx_path: Path) -> _Config:
    """Step 2: workspace limit, precision flags, the optimisation profile (dynamic batch) and the timing cache."""
    config = net.builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    build_flags = _set_precision(trt, net.builder, config, opts.precision)
    shapes = _profile_shapes(net.inputs, opts)
    if shapes:
        profile = net.builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise BundleError(f"TensorRT rejected the optimisation profile {shapes}")
    timing_cache = _load_timing_cache(config, opts.timing_cache)
    if hasattr(trt, "IProgressMonitor"):  # TensorRT >= 10: report build phases as they go
        config.progress_monitor = _progress_monitor(trt)
    return _Config(config, build_flags, shapes, timing_cache)


def _entropy_calibrator(
    trt: ModuleType,
    cuda: ModuleType,
    net: _Network,
    cfg: _Config,
    bundle: Bundle,
    opts: BuildOptions,
    calibration: CalibrationSet,
    cache_path: Path,
) -> Any:
    """Step 3 (implicit INT8 from the fp32 ONNX): the entropy calibrator over normal images,
    with a fixed-shape calibration profile when the batch is dynamic."""
    calib_shape = _calibration_shape(net.inputs[IMAGE], opts.calib_batch)
    if cfg.shapes:
        cprofile = net.builder.create_optimization_profile()
        for name, (_lo, opt, _hi) in cfg.shapes.items():
            shape = calib_shape if name == IMAGE else opt
            cprofile.set_shape(name, shape, shape, shape)
        cfg.config.set_calibration_profile(cprofile)
    m = bundle.manifest
    has_text = TEXT in net.inputs
    calibrator = make_entropy_calibrator(
        trt,
        cuda,
        calibration.make_batches(calib_shape[0]),
        CalibrationInputs(
            image_name=IMAGE,
            image_shape=calib_shape,
            input_layout=m.preprocess.input_layout,
            mean=m.preprocess.mean,
            std=m.preprocess.std,
            text_name=TEXT if has_text else None,
            text_embeddings=bundle.text_embeddings() if has_text else None,
        ),
        cache_path,
    )
    cfg.config.int8_calibrator = calibrator
    return calibrator


def _build_serialized(trt: ModuleType, net: _Network, cfg: _Config, calibrator: Any, failure: str) -> bytes:
    """Step 4: build and serialise; the calibrator's device buffers are freed either way."""
    try:
        serialized = net.builder.build_serialized_network(net.network, cfg.config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        detail = " | ".join(net.logger.errors) or "see the TensorRT log above"
        raise BackendUnavailable(f"{failure}: {detail}")
    return bytes(serialized)


def _engine_entry(
    bundle: Bundle,
    opts: BuildOptions,
    source: str,
    version: str,
    gpu: compat.GpuInfo,
    engine_name: str,
    cfg: _Config,
    cache_name: str,
    calibration: CalibrationSet | None,
) -> EngineEntry:
    """Step 5: the manifest's record of the engine (what built it, for which GPU, from what)."""
    calib_set = ""
    if cache_name:
        calib_set = calibration.sha256 if calibration else ""
    elif source == "int8":
        calib_set = next(v.calibration_set_sha256 for v in bundle.manifest.variants if v.precision == "int8")
    profile_flags = tuple(
        f"profile:{n}={'x'.join(map(str, s[0]))}..{'x'.join(map(str, s[2]))}" for n, s in cfg.shapes.items()
    )
    return EngineEntry(
        file=engine_name,
        precision=opts.precision,
        source_onnx=bundle.manifest.model_file if source == "fp32" else bundle.model_path("int8").name,
        tensorrt_version=version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        build_flags=tuple(cfg.build_flags) + (("explicit-qdq",) if source == "int8" else ()) + profile_flags,
        workspace_mb=opts.workspace_mb,
        calibration_cache=cache_name,
        calibration_cache_sha256=sha256_file(bundle.path(cache_name)) if cache_name else "",
        calibration_set_sha256=calib_set,
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _progress_monitor(trt: ModuleType) -> Any:
    """A trt.IProgressMonitor that logs top-level build phases with their duration."""
    import time

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._started: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._started[phase_name] = time.monotonic()
            if parent_phase is None:
                log.info("TensorRT build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            t0 = self._started.pop(phase_name, None)
            if t0 is not None:
                log.debug("TensorRT build: %s done in %.1f s", phase_name, time.monotonic() - t0)

    return _Monitor()


def _set_precision(trt: ModuleType, builder: Any, config: Any, precision: str) -> list[str]:
    # platform_has_fast_* are deprecated in TensorRT 10 (every supported GPU has both); absent means yes.
    if not getattr(builder, "platform_has_fast_fp16", True):
        raise BackendUnavailable("this GPU has no fast FP16; TensorRT would silently run FP32")
    config.set_flag(trt.BuilderFlag.FP16)  # int8 engines keep their float layers in fp16, as trtexec --int8 --fp16
    flags = ["FP16"]
    if precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            raise BackendUnavailable("this GPU has no fast INT8")
        config.set_flag(trt.BuilderFlag.INT8)
        flags.insert(0, "INT8")
    return flags


def _profile_shapes(inputs: dict[str, tuple[int, ...]], opts: BuildOptions) -> dict[str, tuple[tuple[int, ...], ...]]:
    """min/opt/max shapes for inputs with a dynamic dimension (only the batch may be dynamic)."""
    shapes = {}
    for name, shape in inputs.items():
        if all(d >= 0 for d in shape):
            continue
        if any(d < 0 for d in shape[1:]) or name != IMAGE:
            raise BundleError(
                f"input '{name}' has dynamic dimensions {shape} other than the image batch; the bundle contract fixes them"
            )
        rest = tuple(shape[1:])
        shapes[name] = ((1,) + rest, (opts.opt_batch,) + rest, (opts.max_batch,) + rest)
    return shapes


def _calibration_shape(image_shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    if image_shape[0] >= 0 and image_shape[0] != batch:
        log.info("calibration batch set to the engine's static batch %d", image_shape[0])
        return tuple(image_shape)
    return (batch,) + tuple(image_shape[1:])


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    log.info("timing cache %s: %s", path, f"{len(data)} bytes loaded" if data else "new")
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise BundleError(f"timing cache {path} does not fit this TensorRT/GPU; delete it to start a new one")
    return cache


def record_engine(bundle: Bundle, entry: EngineEntry) -> Bundle:
    """Add/replace the engine entry (one per precision), hash its files, write the manifest."""
    m = bundle.manifest
    old = [e for e in m.engines if e.precision == entry.precision]
    files = dict(m.files)
    for e in old:
        for name in (e.file, e.calibration_cache):
            if name and name not in (entry.file, entry.calibration_cache):
                files.pop(name, None)
    m = replace(m, engines=tuple(e for e in m.engines if e.precision != entry.precision) + (entry,), files=files)
    m = with_file(m, bundle.root, entry.file)
    if entry.calibration_cache:
        m = with_file(m, bundle.root, entry.calibration_cache)
    write_manifest(bundle.root, m)
    # The new files were just hashed and the rest were verified when the build loaded the bundle:
    # re-reading every model and engine on the device would only repeat that.
    return load_bundle(bundle.root, verify=False)


def trtexec_command(
    root: Path, onnx_name: str, entry: EngineEntry, shapes: dict, opts: BuildOptions, source: str
) -> str:
    """The trtexec line that builds the same engine (for comparing, or building by hand)."""
    args = ["trtexec", f"--onnx={root / onnx_name}", f"--saveEngine={root / entry.file}", "--fp16"]
    if entry.precision == "int8":
        args.append("--int8")
        if entry.calibration_cache:
            args.append(f"--calib={root / entry.calibration_cache}")
    args.append(f"--memPoolSize=workspace:{opts.workspace_mb}")
    if opts.timing_cache is not None:
        args.append(f"--timingCacheFile={opts.timing_cache}")
    for key, idx in (("min", 0), ("opt", 1), ("max", 2)):
        if shapes:
            args.append(f"--{key}Shapes=" + ",".join(f"{n}:{'x'.join(map(str, s[idx]))}" for n, s in shapes.items()))
    return " ".join(shlex.quote(a) for a in args)
