"""INT8 static Q/DQ quantization of the exported ONNX graph (ONNX Runtime's quantizer).

What gets quantized is chosen from the graph's structure, not from exporter-specific node
names (the torch.onnx exporters name weights `onnx::MatMul_301` or `val_2`):

- only weight operators: a MatMul with exactly one constant input, or a Gemm with constant B
  (DESIGN §6b: the activation x activation attention MatMuls QK^T and attn*V cost accuracy and
  buy little, so they stay float; so does the similarity with the `text_embeddings` input);
- the stem (a weight op with no weight op upstream: the patch-embedding Conv) stays float;
- the head (weight ops after the last LayerNorm: the final projection) stays float, because
  its output goes straight into the cosine similarity that makes the score;
- a weight op fed directly by a Softmax stays float (softmax outputs are badly served by 8 bits);
- LayerNormalization and Softmax are never quantized (they are not in the op types);
- anything matching a user pattern (fnmatch on node name, input or output names) stays float.

The format targets TensorRT 10 explicit quantization as well as ONNX Runtime CPU: QDQ,
signed INT8 activations and weights, symmetric (zero point 0, which TensorRT requires),
per-channel weights on the output-channel axis, biases kept float, Q/DQ on the inputs and
(by default, for ONNX Runtime CPU's integer kernels; see QuantConfig.quantize_outputs) the
outputs of the quantized MatMuls.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_runtime.errors import ConfigError, DataError

log = logging.getLogger(__name__)

WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
_LAYERNORM = "LayerNormalization"


@dataclass(frozen=True)
class QuantConfig:
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    per_channel: bool = True
    activation_type: Literal["int8", "uint8"] = "int8"  # uint8 is asymmetric: ORT only, not TensorRT
    symmetric_activations: bool = True  # zero point 0, required by TensorRT
    # Q/DQ on the outputs of the quantized MatMuls too. TensorRT takes either (its guide leans
    # to inputs only); ONNX Runtime CPU needs it: it fuses MatMul+bias into a float Gemm first,
    # and a DQ->Gemm without an output Q stays float (measured 0.7x FP32 on ViT-B/16), while
    # DQ->MatMul->Q becomes QLinearMatMul. Score drift on ViT-B/16: 1.3e-3 vs 1.1e-3 without.
    quantize_outputs: bool = True
    exclude: tuple[str, ...] = ()  # fnmatch patterns on node / input / output names
    keep_stem_float: bool = True
    keep_head_float: bool = True
    percentile: float = 99.999
    preprocess: bool = True  # onnxruntime's quant_pre_process (shape inference) + folding of constant weight transposes

    def __post_init__(self) -> None:
        bad = [t for t in self.op_types if t not in WEIGHT_OPS]
        if bad or not self.op_types:
            raise ConfigError(
                f"quantization op_types must be a non-empty subset of {', '.join(WEIGHT_OPS)}, got {list(self.op_types)}"
            )
        if not 90.0 <= self.percentile <= 100.0:
            raise ConfigError(f"quantization percentile must be in [90, 100], got {self.percentile}")
        if self.activation_type == "uint8" and self.symmetric_activations:
            log.debug("uint8 activations with symmetric ranges use zero point 128")

    def describe(self) -> str:
        act = f"{'S' if self.activation_type == 'int8' else 'U'}8S8"
        sym = "symmetric" if self.symmetric_activations else "asymmetric"
        chan = "per-channel" if self.per_channel else "per-tensor"
        return f"onnxruntime static QDQ {act} ({sym} activations, {chan} symmetric weights), {'/'.join(self.op_types)} with constant weights, calibration {self.method}"


@dataclass(frozen=True)
class NodeSelection:
    quantize: tuple[str, ...]
    excluded: Mapping[str, str]  # node name -> why it stays float

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for why in self.excluded.values():
            reasons[why] = reasons.get(why, 0) + 1
        kept = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
        return f"{len(self.quantize)} nodes quantized; kept float: {kept or 'none'}"


@dataclass(frozen=True)
class QuantResult:
    path: Path
    selection: NodeSelection
    config: QuantConfig
    num_calibration_batches: int
    preprocessed: bool
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------- graph analysis (pure)


def name_unnamed_nodes(model: Any) -> None:
    """Give every node a unique name: the quantizer selects nodes by name."""
    seen = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in seen:
                name += "_"
            node.name = name
            seen.add(name)


def unshare_initializers(model: Any, node_names: Sequence[str]) -> int:
    """Give each of `node_names` its own copy of any initializer other nodes also read.

    Exporters deduplicate equal constants (e.g. the all-zero biases of a freshly initialised
    layer and a LayerNorm's bias become one tensor). The quantizer rewrites an initializer for
    all of its readers, which would put Q/DQ in front of float ops such as LayerNorm."""
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in set(n.input):
            readers[i] = readers.get(i, 0) + 1
    inits = {t.name: t for t in model.graph.initializer}
    wanted = set(node_names)
    copies = 0
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        for k, name in enumerate(node.input):
            if name in inits and readers.get(name, 0) > 1:
                dup = model.graph.initializer.add()
                dup.CopyFrom(inits[name])
                dup.name = f"{name}__{node.name}"
                node.input[k] = dup.name
                readers[name] -= 1
                copies += 1
    return copies


def decouple_activation_qdq(model: Any) -> int:
    """Give each activation Q/DQ pair its own scale/zero-point initializers.

    ONNX Runtime's graph optimisers merge identical Q->DQ pairs back into one DQ feeding
    several MatMuls (q/k/v read the same LayerNorm output), and its DQ->MatMul integer fusion
    needs a DQ with a single consumer: without this the q/k/v projections ran in float on
    weights dequantized at every call. Values are unchanged; TensorRT sees the same Q/DQ."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    copies = 0

    def own(node: Any, tag: str) -> None:
        nonlocal copies
        for k in (1, 2):
            if len(node.input) > k and node.input[k] in inits:
                dup = model.graph.initializer.add()
                dup.CopyFrom(inits[node.input[k]])
                dup.name = f"{node.input[k]}__{tag}"
                node.input[k] = dup.name
                copies += 1

    for node in model.graph.node:
        if (
            node.op_type == "DequantizeLinear"
            and node.input[0] in producer
            and producer[node.input[0]].op_type == "QuantizeLinear"
        ):
            own(node, node.name)
            own(producer[node.input[0]], node.name)
    return copies


def drop_unused_opsets(model: Any) -> list[str]:
    """Keep only the opset imports the graph's nodes use. ONNX Runtime's optimiser (in
    quant_pre_process) declares all its contrib domains; TensorRT's parser need not see them.
    Returns the non-standard domains still in use (empty for a TensorRT-parsable graph)."""
    used = {n.domain or "" for n in model.graph.node}
    keep = [o for o in model.opset_import if (o.domain or "") in used or (o.domain or "") in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    custom = sorted(d for d in used if d not in ("", "ai.onnx"))
    if custom:
        log.warning("the INT8 graph uses non-standard op domains %s: TensorRT cannot parse it", ", ".join(custom))
    return custom


def constant_names(model: Any) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    names.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return names


def weight_input(node: Any, constants: set[str]) -> int | None:
    """Index of the constant weight input of a MatMul/Gemm/Conv, or None (activation x activation)."""
    if node.op_type == "MatMul":
        # x @ W only: the quantizer (MatMulConstBOnly) takes a constant B, and a constant A
        # is not a layer's weight.
        if len(node.input) == 2 and node.input[1] in constants and node.input[0] not in constants:
            return 1
        return None
    if node.op_type in ("Gemm", "Conv"):
        return 1 if len(node.input) > 1 and node.input[1] in constants else None
    return None


def select_nodes(model: Any, config: QuantConfig) -> NodeSelection:
    """Which nodes of `model` to quantize under `config`, and why the others stay float."""
    graph = model.graph
    constants = constant_names(model)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    is_weight_op = {n.name: n.op_type in WEIGHT_OPS and weight_input(n, constants) is not None for n in graph.node}
    has_layernorm = any(n.op_type == _LAYERNORM for n in graph.node)

    def reach(start: Any, forward: bool) -> Iterator[Any]:
        stack, seen = [start], {start.name}
        while stack:
            node = stack.pop()
            nxt = (
                [c for o in node.output for c in consumers.get(o, [])]
                if forward
                else [producer[i] for i in node.input if i in producer]
            )
            for m in nxt:
                if m.name not in seen:
                    seen.add(m.name)
                    yield m
                    stack.append(m)

    quantize: list[str] = []
    excluded: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in config.op_types:
            continue
        if not is_weight_op[node.name]:
            excluded[node.name] = "activation x activation"
            continue
        if _matches(node, config.exclude):
            excluded[node.name] = "excluded by pattern"
            continue
        if config.keep_stem_float and not any(is_weight_op[m.name] for m in reach(node, forward=False)):
            excluded[node.name] = "stem (patch embedding)"
            continue
        if config.keep_head_float:
            downstream = list(reach(node, forward=True))
            if has_layernorm:
                is_head = not any(m.op_type == _LAYERNORM for m in downstream)
            else:
                is_head = not any(is_weight_op[m.name] for m in downstream)
            if is_head:
                excluded[node.name] = "head (final projection)"
                continue
        data_inputs = [i for i in node.input if i and i not in constants]
        if any(producer.get(i) is not None and producer[i].op_type == "Softmax" for i in data_inputs):
            excluded[node.name] = "Softmax neighbour"
            continue
        quantize.append(node.name)
    return NodeSelection(quantize=tuple(quantize), excluded=excluded)


def _matches(node: Any, patterns: Sequence[str]) -> bool:
    names = [node.name, *node.input, *node.output]
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names if n)


# ---------------------------------------------------------------- quantization


class _Reader:
    """onnxruntime CalibrationDataReader over ready-made feeds (one dict per batch)."""

    def __init__(
        self, feeds: Iterable[Mapping[str, np.ndarray]], on_batch: Callable[[int], None] | None = None
    ) -> None:
        self._it = iter(feeds)
        self._on_batch = on_batch
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._it, None)
        if feed is None:
            return None
        self.count += 1
        if self._on_batch:
            self._on_batch(int(next(iter(feed.values())).shape[0]) if feed else 0)
        return dict(feed)

    def rewind(self) -> None:  # the quantizer may call it; a one-pass reader has nothing to rewind
        pass


def _make_reader(feeds: Iterable[Mapping[str, np.ndarray]], on_batch: Callable[[int], None] | None):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(feeds, on_batch)


def quantize_qdq(
    fp32_model: str | Path,
    out_path: str | Path,
    feeds: Iterable[Mapping[str, np.ndarray]],
    config: QuantConfig = QuantConfig(),
    *,
    on_batch: Callable[[int], None] | None = None,
) -> QuantResult:
    """Write an INT8 Q/DQ copy of `fp32_model` to `out_path`, calibrated on `feeds`
    (dicts input name -> array, one per batch, e.g. from `bundle_feeds`)."""
    src = Path(fp32_model)
    out = Path(out_path)
    if not src.is_file():
        raise DataError(f"ONNX model not found: {src}")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="clipinspect-qdq-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        selection, preprocessed = _prepare(src, prepared, config, notes)
        reader = _make_reader(feeds, on_batch)
        _quantize_static(prepared, out, reader, selection, config)
    return QuantResult(
        path=out,
        selection=selection,
        config=config,
        num_calibration_batches=reader.count,
        preprocessed=preprocessed,
        notes=tuple(notes),
    )


def _prepare(src: Path, prepared: Path, config: QuantConfig, notes: list[str]) -> tuple[NodeSelection, bool]:
    """Write the graph the quantizer reads to `prepared` (pre-processed if configured, every node
    named, initializers shared by quantized and float nodes copied); (selection, pre-processed)."""
    import onnx

    preprocessed = _pre_process(src, prepared, notes) if config.preprocess else False
    model = onnx.load(str(prepared if preprocessed else src))
    name_unnamed_nodes(model)
    selection = select_nodes(model, config)
    if not selection.quantize:
        raise DataError(
            f"{src}: no {'/'.join(config.op_types)} node with constant weights is left to quantize ({selection.summary()})"
        )
    copies = unshare_initializers(model, selection.quantize)
    if copies:
        log.debug("un-shared %d initializers read by quantized and float nodes", copies)
    onnx.save(model, str(prepared))
    log.info("INT8 node selection: %s", selection.summary())
    return selection, preprocessed


def _extra_options(config: QuantConfig) -> dict[str, Any]:
    """quantize_static's extra_options for the Q/DQ format this module documents."""
    extra: dict[str, Any] = {
        "ActivationSymmetric": config.symmetric_activations,
        "WeightSymmetric": True,
        "MatMulConstBOnly": True,
        # Biases stay float: TensorRT has no int32 DequantizeLinear and fuses the bias itself.
        "QuantizeBias": False,
        # One Q/DQ pair per consumer: ONNX Runtime only fuses DQ->MatMul into an integer
        # kernel when the DQ has a single consumer (q/k/v share their input otherwise, and
        # those MatMuls would run in float on weights dequantized every call).
        "DedicatedQDQPair": True,
    }
    if not config.quantize_outputs:
        extra["OpTypesToExcludeOutputQuantization"] = list(config.op_types)
    if config.method == "percentile":
        extra["CalibPercentile"] = config.percentile
    if config.method in ("entropy", "percentile"):
        extra["CalibTensorRangeSymmetric"] = config.symmetric_activations
    return extra


def _quantize_static(prepared: Path, out: Path, reader: Any, selection: NodeSelection, config: QuantConfig) -> None:
    """Calibrate and quantize `prepared` into `out`, atomically (a partial file never stays);
    DataError when the calibration set yields no batch."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    act_type = QuantType.QInt8 if config.activation_type == "int8" else QuantType.QUInt8
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[config.method]
    tmp_out = out.with_name(f".{out.name}.partial")
    try:
        with _quiet_root_logger():
            quantize_static(
                str(prepared),
                str(tmp_out),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(config.op_types),
                per_channel=config.per_channel,
                reduce_range=False,
                activation_type=act_type,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=list(selection.quantize),
                calibrate_method=method,
                extra_options=_extra_options(config),
            )
        if reader.count == 0:
            raise DataError("calibration produced no batches (empty calibration set)")
        qmodel = onnx.load(str(tmp_out))
        decouple_activation_qdq(qmodel)
        drop_unused_opsets(qmodel)
        onnx.save(qmodel, str(tmp_out))
        os.replace(tmp_out, out)
    finally:
        if tmp_out.exists():
            tmp_out.unlink()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs one INFO line per tensor on the root logger; keep them
    for -vv (DEBUG) only."""
    root = logging.getLogger()
    old = root.level
    if root.getEffectiveLevel() > logging.DEBUG:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(old)


def _pre_process(src: Path, dst: Path, notes: list[str]) -> bool:
    """Shape inference, then weights reached through a Transpose folded into initializers.

    ONNX Runtime's graph optimisation in quant_pre_process is skipped on purpose: it fuses
    MatMul+Add into Gemm (flattening to 2-D), and a DQ->Gemm without an output Q is not fused
    into an integer kernel by ONNX Runtime CPU: it ran slower than FP32. A failure is logged
    and quantization goes on with the graph as exported."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet_root_logger():
            quant_pre_process(str(src), str(dst), skip_optimization=True, skip_symbolic_shape=False)
    except Exception as exc:  # a third-party shape inference failing in any way
        msg = f"quant_pre_process failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); quantizing the graph as exported"
        log.warning(msg)
        notes.append(msg)
        return False
    model = onnx.load(str(dst))
    if fold_weight_transposes(model):
        onnx.save(model, str(dst))
    return True


def fold_weight_transposes(model: Any) -> int:
    """Replace Transpose(initializer) by a transposed initializer (exporters emit x @ W^T as
    MatMul(x, Transpose(W))), so such MatMuls count as weight MatMuls."""
    import numpy as np
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    outputs = {o.name for o in model.graph.output}
    folded = []
    for node in model.graph.node:
        if node.op_type != "Transpose" or node.input[0] not in inits or node.output[0] in outputs:
            continue
        arr = numpy_helper.to_array(inits[node.input[0]])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        new = numpy_helper.from_array(np.ascontiguousarray(np.transpose(arr, perm)), node.output[0])
        model.graph.initializer.append(new)
        folded.append(node)
    if not folded:
        return 0
    for node in folded:
        model.graph.node.remove(node)
        readers[node.input[0]] -= 1
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used or t.name in outputs]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return len(folded)


def dynamic_weight_only(
    fp32_model: str | Path, out_path: str | Path, op_types: Sequence[str] = ("MatMul", "Gemm")
) -> Path:
    """Dynamic (weight-only, activations quantized at run time) INT8 copy: a CPU-only baseline
    for comparison in benchmarks; TensorRT cannot use it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(
            str(fp32_model),
            str(out_path),
            op_types_to_quantize=list(op_types),
            per_channel=False,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    return Path(out_path)


# ---------------------------------------------------------------- bundles

INT8_FILE = "model.int8.onnx"


@dataclass(frozen=True)
class BundleCalibration:
    bundle_root: Path
    model_file: str
    calibration_set_sha256: str
    result: QuantResult
    score_drift_max: float  # max |score_int8 - score_fp32| on the calibration images
    num_images: int


def bundle_feeds(bundle: Any, images: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Model feeds for uint8 NHWC batches, following the bundle's input contract."""
    from edge_runtime.file_input import to_model_input

    pre = bundle.manifest.preprocess
    text = bundle.text_embeddings()
    bank = bundle.memory_bank() if hasattr(bundle, "memory_bank") else None
    names = {t.name for t in bundle.manifest.inputs}
    for batch in images:
        feed = {"image": to_model_input(batch, pre)}
        if text is not None and "text_embeddings" in names:
            feed["text_embeddings"] = text
        if bank is not None and "memory_bank" in names:
            # the bank path has no weight MatMul, so it stays float; the bank only has to be fed
            feed["memory_bank"] = bank
        yield feed


def calibrate_bundle(
    bundle_root: str | Path,
    calib: Any,
    config: QuantConfig = QuantConfig(),
    *,
    batch_size: int = 1,
    out_name: str = INT8_FILE,
    progress: bool = True,
) -> BundleCalibration:
    """Quantize the bundle's FP32 model on calibration set `calib` (a CalibrationSet), write
    `out_name` and the set's record into the bundle, and list both in the manifest (variants,
    files with sha256). The updated bundle is re-loaded with hash verification before returning."""
    from calibration.calibration_set import SET_FILE
    from edge_runtime.bundle import ModelVariant, load_bundle, with_file, write_manifest

    bundle = load_bundle(bundle_root, verify=True)
    root = bundle.root
    pre = bundle.manifest.preprocess
    if pre.input_layout == "frame_uint8":
        # Its graph starts with the frame preprocessing, whose constant MatMuls (binning,
        # colour, resampling) the weight-MatMul selection would quantize; not handled yet.
        raise ConfigError(
            f"{root} is a raw-frame bundle: Q/DQ calibration is not supported for it yet; "
            "build an INT8 TensorRT engine with 'clipinspect build-engine --precision int8 --calib-images DIR' instead"
        )
    bar = _progress(len(calib), "calibrating", progress)
    try:
        images = calib.batches(pre.image_size, batch_size, color_order=pre.color_order, method=pre.resize)
        result = quantize_qdq(
            bundle.model_path("fp32"), root / out_name, bundle_feeds(bundle, images), config, on_batch=bar.update
        )
    finally:
        bar.close()
    calib.write(root / SET_FILE)

    drift = _score_drift(bundle, root / out_name, calib)
    variant = ModelVariant(
        file=out_name,
        precision="int8",
        quantization=config.describe(),
        calibration_set_sha256=calib.sha256,
        notes=f"{result.selection.summary()}; {len(calib)} calibration images (seed {calib.seed}, set in {SET_FILE}); max |score drift| on them {drift:.4g}",
    )
    m = _with_int8_variant(bundle.manifest, variant)
    m = with_file(with_file(m, root, out_name), root, SET_FILE)
    write_manifest(root, m)
    load_bundle(root, verify=True)
    log.info("wrote %s (%s); calibration set %s", root / out_name, result.selection.summary(), calib.sha256[:16])
    return BundleCalibration(root, out_name, calib.sha256, result, drift, len(calib))


def _with_int8_variant(m: Any, variant: Any) -> Any:
    """Manifest `m` with `variant` as its one INT8 variant, and without the engines (and their
    file entries) built from the model file `variant` replaces."""
    from dataclasses import replace

    out_name = variant.file
    variants = tuple(v for v in m.variants if v.file != out_name and v.precision != "int8") + (variant,)
    # An engine built from the previous Q/DQ model no longer matches it: drop its entry so the
    # device cannot run a stale engine under the new model's name (rebuild with build-engine).
    stale = [e for e in m.engines if e.source_onnx == out_name]
    for e in stale:
        log.warning(
            "dropping engine %s from the manifest: it was built from the previous %s; rebuild it on the target",
            e.file,
            out_name,
        )
    files = {k: v for k, v in m.files.items() if k not in {e.file for e in stale}}
    return replace(m, variants=variants, engines=tuple(e for e in m.engines if e not in stale), files=files)


def _score_drift(bundle: Any, int8_path: Path, calib: Any) -> float:
    """Largest |Δscore| INT8 vs FP32 on the calibration images: a first sanity check that
    the quantized graph runs and is not broken (the precision report is the real judge).
    Both run on the device's ort-cpu backend; the INT8 file is not in the manifest yet."""
    from contextlib import closing

    from calibration.precision_report import BundleWithModel
    from edge_runtime.backends import make_backend
    from edge_runtime.file_input import to_model_input

    pre = bundle.manifest.preprocess
    worst = 0.0
    with closing(make_backend("ort-cpu")) as fp32, closing(make_backend("ort-cpu")) as int8:
        fp32.load(bundle, "fp32")
        int8.load(BundleWithModel(bundle, "int8", int8_path), "int8")
        for batch in calib.batches(pre.image_size, 1, color_order=pre.color_order, method=pre.resize):
            x = to_model_input(batch, pre)
            diff = np.abs(fp32.infer(x).score.astype(np.float64) - int8.infer(x).score)
            worst = max(worst, float(np.max(diff)))
    return worst


def _progress(total: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a train extra; a bar is a nicety, not a requirement
        tqdm = None
    if tqdm is None or not enabled:

        class _Null:
            def update(self, n: int = 1) -> None:
                pass

            def close(self) -> None:
                pass

        return _Null()
    return tqdm(total=total, desc=desc, unit="img", leave=False)
