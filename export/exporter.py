"""The one export entry: merged model folder -> bundle folder (ONNX + text embeddings + manifest)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from edge_runtime.bundle import Bundle, FewShotSpec, PreprocessSpec, Threshold
from edge_runtime.errors import ConfigError, DataError
from export.bundle_writer import BundleWriter, make_manifest
from export.onnx_export import ExportOptions, ExportResult, export_onnx, input_layout
from export.text_embeddings import compute_text_embeddings, save_text_embeddings
from export.torch_backend import MERGED_KEY

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
EMBEDDINGS_FILE = "text_embeddings.npy"


@dataclass(frozen=True)
class ThresholdOverride:
    """A threshold given on the export command line instead of the merged model's."""

    value: float
    method: str


def export_bundle(
    merged_dir: str | Path,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    *,
    overwrite: bool = False,
    threshold: ThresholdOverride | None = None,
    resize: str = "area",
) -> Bundle:
    """Load the merged model, export it, write the bundle atomically and return it (loaded
    back through edge_runtime.bundle.load_bundle, hashes checked)."""
    options = options if options is not None else ExportOptions()
    merged_dir = Path(merged_dir).absolute()
    if not merged_dir.is_dir():
        raise DataError(f"merged model folder not found: {merged_dir}")
    import torch

    from train.merged import load_merged, read_merged_info

    options = frame_from_run(options, read_merged_info(merged_dir), merged_dir)  # before the slow load
    model, info = load_merged(merged_dir)
    model = model.to("cpu", torch.float32).eval()
    thr = _threshold(info, threshold, merged_dir)
    text = compute_text_embeddings(model)
    preprocess = preprocess_spec(info, options, resize)
    with BundleWriter(out_dir, overwrite=overwrite) as writer:
        result = export_onnx(
            model,
            writer.path(MODEL_FILE),
            image_size=preprocess.image_size,
            mean=preprocess.mean,
            std=preprocess.std,
            text_embeddings=text,
            options=options,
        )
        save_text_embeddings(writer.path(EMBEDDINGS_FILE), text)
        manifest = make_manifest(
            model_id=str(info.model_id),
            clip_source=str(info.clip_source),
            preprocess=preprocess,
            inputs=result.inputs,
            outputs=result.outputs,
            threshold=thr,
            prompts=info.prompts,
            baked_text=options.bake_text,
            opset=options.opset,
            model_file=MODEL_FILE,
            embeddings_file=EMBEDDINGS_FILE,
            lineage={"training": dict(getattr(info, "lineage", None) or {})}
            if getattr(info, "lineage", None)
            else None,
            extra=_manifest_extra(info, result, options, merged_dir),
        )
        if options.bank_shots:
            manifest = replace(manifest, fewshot=fewshot_spec(result, options.bank_shots))
        return writer.commit(manifest)


def preprocess_spec(info: object, options: ExportOptions, resize: str) -> PreprocessSpec:
    """The manifest's preprocessing record: the merged model's size and mean/std, the graph's
    input layout and, for raw-frame graphs, the camera frame (format, size, ROI)."""
    size = info.image_size  # type: ignore[attr-defined]
    return PreprocessSpec(
        image_size=(int(size[0]), int(size[1])),
        color_order="RGB",
        mean=tuple(float(v) for v in info.mean),  # type: ignore[attr-defined]
        std=tuple(float(v) for v in info.std),  # type: ignore[attr-defined]
        input_layout=input_layout(options),  # type: ignore[arg-type]
        resize=resize,  # type: ignore[arg-type]
        input_format=options.input_format or "",
        input_size=options.input_size,
        roi=options.roi,
    )


def _manifest_extra(info: object, result: ExportResult, options: ExportOptions, merged_dir: Path) -> dict[str, object]:
    """The manifest's clipinspect-specific keys: where the merged model is (the torch reference
    backend reloads it), its feature layers, the map size and how the graph was exported."""
    return {
        MERGED_KEY: str(merged_dir),
        "feature_layers": [int(v) for v in (getattr(info, "feature_layers", None) or ())],
        "map_size": list(result.map_size),
        "export": {
            "exporter": "torch.onnx.export(dynamo=False) + onnxscript optimizer"
            if options.optimize
            else "torch.onnx.export(dynamo=False)",
            "dynamic_batch": options.dynamic_batch,
            "float_input": options.float_input,
            "bake_text": options.bake_text,
            "bank_shots": options.bank_shots,
            "nodes": result.nodes,
            "ir_version": result.ir_version,
            "self_check_max_diff": result.self_check_max_diff,
        },
    }


def frame_from_run(options: ExportOptions, info: object, merged_dir: Path) -> ExportOptions:
    """A model trained on raw frames (its run's model.input_format, carried by merge) exports
    for that frame: the flags default to it, and flags that name another frame are refused
    (the model learned that sensor layout, ROI and scale). A model trained on RGB images may
    still be exported for any frame, as before."""
    frame = dict(getattr(info, "frame", None) or {})
    if not frame:
        return options
    trained = (
        str(frame["input_format"]),
        tuple(int(v) for v in frame["input_size"]),
        tuple(int(v) for v in frame["roi"]) if frame.get("roi") is not None else None,
    )
    if not options.raw_frame and options.roi is None:
        log.info(
            "raw-frame model: exporting for its training frame %s %dx%d, ROI %s",
            trained[0],
            trained[1][1],
            trained[1][0],
            trained[2],
        )
        return replace(options, input_format=trained[0], input_size=trained[1], roi=trained[2])
    given = (options.input_format, tuple(options.input_size or ()), tuple(options.roi) if options.roi else None)
    if given != trained:

        def fmt(f: tuple) -> str:
            size = f"{f[1][1]}x{f[1][0]}" if len(f[1]) == 2 else "?"
            return f"--input-format {f[0]} --input-size {size}" + (f" --roi {','.join(map(str, f[2]))}" if f[2] else "")

        raise ConfigError(
            f"{merged_dir} was trained on {fmt(trained)} frames, the flags ask for {fmt(given)}; "
            "drop the flags (they default to the run's) or train a run for that frame"
        )
    return options


def fewshot_spec(result: object, max_shots: int) -> FewShotSpec:
    """The manifest's few-shot record for a graph exported with a memory_bank input (no bank yet)."""
    from export.onnx_export import BANK

    layers, _, dim = next(s.shape for s in result.inputs if s.name == BANK)  # type: ignore[attr-defined]
    h, w = result.map_size  # type: ignore[attr-defined]
    return FewShotSpec(max_shots=int(max_shots), patches=int(h) * int(w), layers=int(layers), dim=int(dim))


def _threshold(info: object, override: ThresholdOverride | None, merged_dir: Path) -> Threshold:
    if override is not None:
        return Threshold(float(override.value), override.method, source="export --threshold")
    value = getattr(info, "threshold", None)
    if value is None:
        raise ConfigError(
            f"merged model {merged_dir} carries no threshold (run 'clipinspect eval' before merging, or pass --threshold)"
        )
    method = str(getattr(info, "threshold_method", "") or "unknown")
    from train.merged import DEFAULT_THRESHOLD_METHOD

    if method == DEFAULT_THRESHOLD_METHOD:
        log.warning(
            "merged model %s has the default threshold %.3g (no eval run); verdicts will not be calibrated",
            merged_dir,
            float(value),
        )
    lin = dict(getattr(info, "threshold_lineage", None) or {})
    return Threshold(
        float(value),
        method,
        source=str(merged_dir),
        epoch=lin.get("epoch"),
        images=int(lin.get("images") or 0),
        data_sha256=str(lin.get("data_sha256") or ""),
        frr=lin.get("frr"),
        far=lin.get("far"),
    )
