"""Exporting the merged model (vision tower + anomaly head) as ONE ONNX graph.

The graph carries its own pre-processing (uint8 NHWC RGB -> /255 -> mean/std -> NCHW), as
anomalib's export does, so the device feeds camera pixels and gets the trained score:
inputs  `image` uint8 [N,H,W,3] (or float32 [N,3,H,W] already normalised with float_input,
        or the camera's uint8 frame [N,H,W] / [N,H,W,3] for raw-frame bundles: ROI, demosaic,
        anti-aliased resize and normalisation then run in the graph, train.frame_module)
        `text_embeddings` float32 [2,D] (absent when baked into the graph)
        `memory_bank` float32 [L, bank_shots*P, D] (only with bank_shots > 0: few-shot bank,
        all zeros = not enrolled = exactly the zero-shot result; see train.model.fuse_fewshot)
outputs `score` float32 [N], `anomaly_map` float32 [N,h,w] (patch grid, P(abnormal)),
        `patch_features` float32 [N, L, P, D] (only with bank_shots > 0: what a bank is built from).

Exporter: torch's TorchScript-based exporter (`dynamo=False`). It traces the exact eager
forward and handles HF CLIP predictably; the graph is then cleaned by onnxscript's optimizer
(constant folding, dead-code removal, all standard ONNX ops) and checked: onnx.checker, strict
shape inference, the I/O contract, and ORT-vs-torch on a random image.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle import TensorSpec
from edge_runtime.errors import BundleError, CheckFailed, ConfigError

log = logging.getLogger(__name__)

MIN_OPSET = 17  # LayerNormalization is a single op from 17 on (TensorRT fuses it)
MAX_OPSET = 20  # the TorchScript exporter's ceiling in torch 2.x (torch.onnx._constants)
IMAGE = "image"
TEXT = "text_embeddings"
SCORE = "score"
MAP = "anomaly_map"
BANK = "memory_bank"
FEATURES = "patch_features"
MAX_BANK_SHOTS = 16
BATCH = "batch"
SELF_CHECK_ATOL = 1e-4


@dataclass(frozen=True)
class ExportOptions:
    """How to export: opset, batch, input layout (image, float or raw camera frame), text, few-shot bank."""

    opset: int = 17
    dynamic_batch: bool = False
    float_input: bool = False
    bake_text: bool = False
    optimize: bool = True
    bank_shots: int = 0  # > 0: few-shot memory_bank input for up to this many good images
    # Raw-frame input (edge_runtime.rawframe): the camera's uint8 frame, preprocessed in the graph.
    input_format: str | None = None
    input_size: tuple[int, int] | None = None  # (height, width) of the frame
    roi: tuple[int, int, int, int] | None = None  # (x, y, width, height) in frame pixels

    def __post_init__(self) -> None:
        if not 0 <= self.bank_shots <= MAX_BANK_SHOTS:
            raise ConfigError(f"--bank-shots must be in 0..{MAX_BANK_SHOTS}, got {self.bank_shots}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConfigError(
                f"--opset must be >= {MIN_OPSET} (LayerNormalization) and <= {MAX_OPSET} (exporter limit), got {self.opset}"
            )
        if (self.input_format is None) != (self.input_size is None):
            raise ConfigError("--input-format and --input-size go together (the frame as the camera delivers it)")
        if self.roi is not None and self.input_format is None:
            raise ConfigError("--roi needs --input-format/--input-size (it crops the raw frame inside the graph)")
        if self.input_format is not None:
            from edge_runtime.rawframe import check_roi

            check_roi(self.input_format, self.input_size, self.roi)  # type: ignore[arg-type]
            if self.float_input:
                raise ConfigError(
                    "--float-input and --input-format exclude each other: a raw-frame graph takes the camera's uint8 frame"
                )

    @property
    def raw_frame(self) -> bool:
        """True when the graph takes the camera's raw frame (preprocessing in the graph)."""
        return self.input_format is not None


@dataclass(frozen=True)
class ExportResult:
    """The exported file, its I/O contract, map size, node count and ORT-vs-torch self-check difference."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    map_size: tuple[int, int]
    nodes: int
    self_check_max_diff: float
    ir_version: int


def input_layout(options: ExportOptions) -> str:
    """The manifest's name for the graph's image input layout under `options`."""
    if options.raw_frame:
        return "frame_uint8"
    return "NCHW_float32" if options.float_input else "NHWC_uint8"


def tensor_specs(
    image_size: tuple[int, int], embed_dim: int, map_size: tuple[int, int], options: ExportOptions, n_layers: int = 0
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The I/O contract the exported graph must satisfy (and the manifest states)."""
    n: int | str = BATCH if options.dynamic_batch else 1
    inputs: tuple[TensorSpec, ...] = (_image_spec(n, image_size, options),)
    if not options.bake_text:
        inputs += (
            TensorSpec(
                TEXT,
                (2, embed_dim),
                "float32",
                "L2-normalised text embeddings: row 0 normal prompt, row 1 abnormal prompt",
            ),
        )
    outputs = (
        TensorSpec(
            SCORE, (n,), "float32", "image anomaly score in [0,1], higher = more anomalous; NG when score >= threshold"
        ),
        TensorSpec(
            MAP,
            (n, *map_size),
            "float32",
            "per-patch probability of 'abnormal' on the patch grid; upsample to the image for a heatmap",
        ),
    )
    if options.bank_shots:
        bank, features = _bank_specs(n, n_layers, options.bank_shots, map_size, embed_dim)
        inputs += (bank,)
        outputs += (features,)
    return inputs, outputs


def _image_spec(n: int | str, image_size: tuple[int, int], options: ExportOptions) -> TensorSpec:
    """The image input: a raw camera frame, a normalised NCHW float image, or an NHWC uint8 image."""
    h, w = image_size
    if options.raw_frame:
        from edge_runtime.rawframe import frame_shape, pixel_format

        shape = frame_shape(str(options.input_format), options.input_size)  # type: ignore[arg-type]
        return TensorSpec(
            IMAGE,
            (n, *shape),
            "uint8",
            f"camera frame as delivered ({pixel_format(str(options.input_format))}, {shape[1]}x{shape[0]}); ROI, demosaic, resize and normalisation happen inside the graph",
        )
    if options.float_input:
        return TensorSpec(IMAGE, (n, 3, h, w), "float32", "RGB image, NCHW, already normalised: (x/255 - mean)/std")
    return TensorSpec(
        IMAGE,
        (n, h, w, 3),
        "uint8",
        "RGB image, NHWC, 0-255; /255 and mean/std normalisation happen inside the graph",
    )


def _bank_specs(
    n: int | str, n_layers: int, shots: int, map_size: tuple[int, int], embed_dim: int
) -> tuple[TensorSpec, TensorSpec]:
    """The few-shot memory-bank input and the patch-features output it is built from."""
    patches = map_size[0] * map_size[1]
    bank = TensorSpec(
        BANK,
        (n_layers, shots * patches, embed_dim),
        "float32",
        "few-shot memory bank: L2-normalised patch features of good images per feature layer (rows repeated to fill); all zeros = not enrolled, zero-shot result",
    )
    features = TensorSpec(
        FEATURES,
        (n, n_layers, patches, embed_dim),
        "float32",
        "L2-normalised patch features per feature layer, the rows a memory bank is built from",
    )
    return bank, features


def _torch_wrapper(
    model: Any,
    mean: Sequence[float],
    std: Sequence[float],
    float_input: bool,
    baked: np.ndarray | None,
    bank: bool = False,
    frame: Any = None,
):
    """`bank`: a memory_bank input (last) and a patch_features output; `frame`: a
    train.frame_module.FramePreprocess for raw-frame graphs (else None)."""
    import torch
    from torch import nn

    class ExportGraph(nn.Module):
        """Pre-processing + model in one module, so it all lands in the one graph."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.float_input = float_input
            # Same arithmetic order as edge_runtime.preprocess.normalize (x * (1/255) - mean) / std,
            # so the in-graph step and the numpy reference agree to float rounding.
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.frame = frame
            self.baked = baked is not None
            if baked is not None:
                self.register_buffer(
                    "text", torch.from_numpy(np.ascontiguousarray(baked, np.float32)), persistent=False
                )

        def forward(self, image: torch.Tensor, *rest: torch.Tensor):
            if self.frame is not None:
                x = self.frame(image)
            elif self.float_input:
                x = image
            else:
                # Cast first: TensorRT lets a uint8 tensor feed only a Cast (then transpose the floats).
                x = image.to(torch.float32).permute(0, 3, 1, 2) * (1.0 / 255.0)
                x = (x - self.mean) / self.std
            text = self.text if self.baked else rest[0]
            if bank:  # inputs: image, [text_embeddings], memory_bank
                out, feats = self.model.forward_features(x, text, rest[-1])
                return out.score, out.anomaly_map, feats
            out = self.model(x, text)
            return out.score, out.anomaly_map

    return ExportGraph().eval()


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Export with HF's 'eager' attention (plain MatMul/Softmax, which every ONNX consumer
    incl. TensorRT parses); restore the model's own choice afterwards."""
    from transformers import PreTrainedModel

    changed = []
    for m in model.modules():
        if isinstance(m, PreTrainedModel):
            before = getattr(m.config, "_attn_implementation", None)
            if before != "eager":
                m.set_attn_implementation("eager")
                changed.append((m, before))
    try:
        yield
    finally:
        for m, before in changed:
            if before is not None:
                m.set_attn_implementation(before)


def export_onnx(
    model: Any,
    out_path: str | Path,
    *,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    text_embeddings: np.ndarray,
    options: ExportOptions = ExportOptions(),
) -> ExportResult:
    """Export `model` (an eval-mode AnomalyCLIP: forward(pixel_values, text_embeddings) ->
    .score [N], .anomaly_map [N,h,w]) with pre-processing to `out_path` and check it."""
    import onnx

    out_path = Path(out_path)
    h, w = (int(image_size[0]), int(image_size[1]))
    was_training = model.training
    model.eval()
    frame = frame_module(options, (h, w), mean, std)
    wrapper = _torch_wrapper(
        model,
        mean,
        std,
        options.float_input,
        text_embeddings if options.bake_text else None,
        options.bank_shots > 0,
        frame,
    )
    trace = _trace_inputs(model, frame, (h, w), mean, std, text_embeddings, options)
    try:
        proto, ref_score, ref_map = _torch_export(model, wrapper, trace, options)
    finally:
        model.train(was_training)
    if options.optimize:
        log.info("optimizing graph (onnxscript: constant folding, dead code removal)")
        proto = _optimize(proto)
    if ref_map.ndim != 3:
        raise BundleError(f"model's anomaly_map must be [N,h,w], got shape {list(ref_map.shape)}")
    map_size = (int(ref_map.shape[1]), int(ref_map.shape[2]))
    inputs, outputs = tensor_specs(
        (h, w), int(text_embeddings.shape[1]), map_size, options, len(getattr(model, "feature_layers", ()))
    )
    check_graph(proto, inputs, outputs)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(out_path))
    log.info("checking %s in ONNX Runtime against torch", out_path.name)
    diff = _self_check(
        out_path, trace.example, None if options.bake_text else text_embeddings, ref_score, ref_map, trace.bank
    )
    log.info(
        "exported %s: %d nodes, opset %d, map %dx%d, ORT vs torch max diff %.2e",
        out_path.name,
        len(proto.graph.node),
        options.opset,
        *map_size,
        diff,
    )
    return ExportResult(out_path, inputs, outputs, map_size, len(proto.graph.node), diff, int(proto.ir_version))


@dataclass(frozen=True)
class _Trace:
    """What the exporter traces with: the example input (numpy, for the self-check), the torch
    arguments, the graph's input/output names and dynamic axes, and the few-shot bank example."""

    example: np.ndarray
    args: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] | None
    bank: np.ndarray | None


def _trace_inputs(
    model: Any,
    frame: Any,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    text_embeddings: np.ndarray,
    options: ExportOptions,
) -> _Trace:
    """A seeded random example image (camera frame for raw-frame graphs) and what goes with it."""
    import torch

    h, w = image_size
    text_t = torch.from_numpy(np.ascontiguousarray(text_embeddings, np.float32))
    rng = np.random.default_rng(0)
    example_u8 = rng.integers(
        0, 256, size=(1, *frame.frame_shape) if frame is not None else (1, h, w, 3), dtype=np.uint8
    )
    example = _graph_input(example_u8, mean, std, options.float_input)
    args: tuple = (torch.from_numpy(example),) if options.bake_text else (torch.from_numpy(example), text_t)
    input_names = [IMAGE] if options.bake_text else [IMAGE, TEXT]
    output_names = [SCORE, MAP]
    dynamic_axes = {IMAGE: {0: BATCH}, SCORE: {0: BATCH}, MAP: {0: BATCH}} if options.dynamic_batch else None
    bank_example = None
    if options.bank_shots:
        bank_example = _bank_example(model, options.bank_shots)
        args += (torch.from_numpy(bank_example),)
        input_names.append(BANK)
        output_names.append(FEATURES)
        if dynamic_axes is not None:
            dynamic_axes[FEATURES] = {0: BATCH}
    return _Trace(example, args, input_names, output_names, dynamic_axes, bank_example)


def _torch_export(
    model: Any, wrapper: Any, trace: _Trace, options: ExportOptions
) -> tuple[Any, np.ndarray, np.ndarray]:
    """(ONNX proto, torch's score and map on the example): traced by the TorchScript exporter
    with HF's eager attention."""
    import onnx
    import torch

    buf = io.BytesIO()
    log.info(
        "exporting to ONNX (opset %d, %s input, %s batch, text %s)",
        options.opset,
        input_layout(options),
        "dynamic" if options.dynamic_batch else "static 1",
        "baked" if options.bake_text else "as input",
    )
    with torch.no_grad(), eager_attention(model), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo and warns about
        # trace-time Python bools in HF code; both are expected here.
        warnings.simplefilter("ignore")
        ref_score, ref_map = (t.numpy() for t in wrapper(*trace.args)[:2])
        torch.onnx.export(
            wrapper,
            trace.args,
            buf,
            dynamo=False,
            opset_version=options.opset,
            input_names=trace.input_names,
            output_names=trace.output_names,
            dynamic_axes=trace.dynamic_axes,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buf.getvalue()), ref_score, ref_map


def frame_module(
    options: ExportOptions, image_size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> Any:
    """The raw-frame preprocessing module for `options` (None for model-size image input)."""
    if not options.raw_frame:
        return None
    from train.frame_module import FramePreprocess

    return FramePreprocess(str(options.input_format), options.input_size, image_size, mean, std, roi=options.roi)  # type: ignore[arg-type]


def _graph_input(batch_u8: np.ndarray, mean: Sequence[float], std: Sequence[float], float_input: bool) -> np.ndarray:
    if not float_input:
        return batch_u8
    from edge_runtime.preprocess import normalize

    return normalize(batch_u8, mean, std)


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The optimizer logs every rewrite at INFO; keep the user's INFO log readable."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(logging.WARNING, lg.getEffectiveLevel()))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _optimize(proto: Any) -> Any:
    import onnxscript.optimizer

    before = len(proto.graph.node)
    with _quiet("onnxscript", "onnx_ir"):
        optimized = onnxscript.optimizer.optimize(proto)
    log.debug("onnxscript optimizer: %d -> %d nodes", before, len(optimized.graph.node))
    return optimized


_ONNX_DTYPES = {"uint8": 2, "float32": 1, "float16": 10, "int8": 3}


def graph_io(proto: Any) -> tuple[dict[str, tuple[str, tuple]], dict[str, tuple[str, tuple]]]:
    """{name: (dtype, shape)} for the graph's real inputs and outputs (a str dim is symbolic)."""
    rev = {v: k for k, v in _ONNX_DTYPES.items()}
    inits = {i.name for i in proto.graph.initializer}

    def one(v: Any) -> tuple[str, tuple]:
        tt = v.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim)
        return rev.get(tt.elem_type, f"onnx-type-{tt.elem_type}"), dims

    ins = {v.name: one(v) for v in proto.graph.input if v.name not in inits}
    outs = {v.name: one(v) for v in proto.graph.output}
    return ins, outs


def check_graph(proto: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """onnx.checker + strict shape inference + the I/O contract (names, dtypes, shapes)."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise BundleError(f"exported graph fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    ins, outs = graph_io(proto)
    for kind, specs, got in (("input", inputs, ins), ("output", outputs, outs)):
        want = {s.name: (s.dtype, tuple(s.shape)) for s in specs}
        if list(want) != list(got):
            raise BundleError(f"exported graph {kind}s are {list(got)}, the contract says {list(want)}")
        for name, (dtype, shape) in want.items():
            if got[name] != (dtype, shape):
                raise BundleError(
                    f"exported graph {kind} '{name}' is {got[name][0]} {list(got[name][1])}, the contract says {dtype} {list(shape)}"
                )


def _self_check(
    path: Path,
    example: np.ndarray,
    text: np.ndarray | None,
    ref_score: np.ndarray,
    ref_map: np.ndarray,
    bank: np.ndarray | None = None,
) -> float:
    """Run the saved file in ORT on the export's example input; it must reproduce torch."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = {IMAGE: example}
    if text is not None:
        feeds[TEXT] = np.ascontiguousarray(text, np.float32)
    if bank is not None:
        feeds[BANK] = bank
    score, amap = sess.run([SCORE, MAP], feeds)
    diff = float(max(np.abs(score - ref_score).max(), np.abs(amap - ref_map).max()))
    if not diff <= SELF_CHECK_ATOL:  # also catches NaN
        raise CheckFailed(
            f"exported {path} disagrees with torch on the export example (max diff {diff:.3g} > {SELF_CHECK_ATOL})"
        )
    return diff


def _bank_example(model: Any, shots: int) -> np.ndarray:
    """A non-zero bank for tracing and the self-check, so the few-shot path is exercised:
    random unit rows of the bank's shape [L, shots * P, D]."""
    n_layers = len(model.feature_layers)
    rows = shots * int(model.grid[0]) * int(model.grid[1])
    bank = np.random.default_rng(1).standard_normal((n_layers, rows, int(model.embed_dim))).astype(np.float32)
    return bank / np.linalg.norm(bank, axis=-1, keepdims=True)
