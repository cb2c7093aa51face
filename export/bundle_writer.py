"""Writing a bundle folder (the write side of `edge_runtime.bundle`).

A bundle appears all at once or not at all: files are written into a staging folder next to
the target, hashed into the manifest, and the folder is renamed into place. A half-written
export therefore never looks like a bundle to the device or to `bundle sync`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from edge_runtime.bundle import (
    SCHEMA,
    SCHEMA_VERSION,
    Manifest,
    PreprocessSpec,
    TensorSpec,
    TextSpec,
    Threshold,
)
from edge_runtime.bundle_stage import BundleStage
from edge_runtime.errors import BundleError

# Distribution names whose versions go into every manifest (what produced the bundle).
_VERSIONED = ("torch", "transformers", "peft", "onnx", "onnxruntime", "onnxscript", "clipinspect")


def library_versions() -> dict[str, str]:
    versions = {}
    for dist in _VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def prompts_mapping(prompts: Any) -> dict[str, str]:
    """The prompt pair as the manifest stores it: {'normal': ..., 'abnormal': ...}."""
    if isinstance(prompts, Mapping):
        out = {str(k): str(v) for k, v in prompts.items()}
    elif isinstance(prompts, (list, tuple)) and len(prompts) == 2:
        out = {"normal": str(prompts[0]), "abnormal": str(prompts[1])}
    else:
        raise BundleError(f"prompts must be a normal/abnormal pair, got {prompts!r}")
    if not {"normal", "abnormal"} <= set(out):
        raise BundleError(f"prompts need 'normal' and 'abnormal' entries, got keys {sorted(out)}")
    return out


def make_manifest(
    *,
    model_id: str,
    clip_source: str,
    preprocess: PreprocessSpec,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    threshold: Threshold,
    prompts: Any,
    baked_text: bool,
    opset: int,
    model_file: str = "model.onnx",
    embeddings_file: str = "text_embeddings.npy",
    extra: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> Manifest:
    """A manifest with no files hashed yet (BundleWriter.commit hashes what it staged)."""
    return Manifest(
        schema=SCHEMA,
        schema_version=SCHEMA_VERSION,
        model_id=model_id,
        clip_source=clip_source,
        preprocess=preprocess,
        inputs=inputs,
        outputs=outputs,
        threshold=threshold,
        # The .npy is shipped even when baked: it documents what the graph holds and lets the
        # torch reference and calibration reuse it; the runtime then does not feed it.
        text=TextSpec(
            prompts=prompts_mapping(prompts), embeddings_file=None if baked_text else embeddings_file, baked=baked_text
        ),
        files={},
        model_file=model_file,
        opset=opset,
        versions=library_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra=dict(extra or {}),
        lineage=dict(lineage or {}),
    )


class BundleWriter(BundleStage):
    """The export's name for edge_runtime.bundle_stage.BundleStage: stage files, then
    `commit(manifest)` hashes them and swaps the folder in (all or nothing).

    with BundleWriter(out, overwrite=args.force) as w:
        export_to(w.path("model.onnx")); save(w.path("text_embeddings.npy"))
        bundle = w.commit(manifest)
    """
