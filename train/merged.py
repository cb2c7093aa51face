"""A merged model folder: LoRA folded into the CLIP weights (PEFT merge_and_unload).

Layout: a plain Hugging Face CLIP folder (config.json, model.safetensors, tokenizer files,
preprocessor_config.json) + `anomaly_head.safetensors` (context tokens, adapters,
temperature) + `clipinspect_model.json` (prompts, threshold, preprocessing, provenance).
Export reads it with `load_merged`; it needs neither PEFT nor the run folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.config import from_mapping
from edge_runtime.errors import ConfigError, DataError
from train.config import ModelConfig
from train.jsonfile import read_json

log = logging.getLogger(__name__)

MODEL_JSON = "clipinspect_model.json"
HEAD_FILE = "anomaly_head.safetensors"
FORMAT = "clipinspect.merged"
FORMAT_VERSION = 1
DEFAULT_THRESHOLD = 0.5
DEFAULT_THRESHOLD_METHOD = "default: no eval run"


@dataclass(frozen=True)
class MergedInfo:
    """clipinspect_model.json: what a merged folder holds beyond the HF CLIP (prompts, threshold, provenance)."""

    clip_source: str
    model_id: str
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    prompts: tuple[str, str]
    threshold: float
    threshold_method: str
    feature_layers: tuple[int, ...]
    n_ctx: int = 0
    adapter: bool = False
    learn_temperature: bool = True
    embed_dim: int = 0
    patch_size: int = 0
    grid: tuple[int, int] = (0, 0)
    source_run: str = ""
    epoch: int | None = None
    # Where the threshold came from (run id, epoch, validation images' digest, FRR/FPR there)
    # and the training data's digests (RUN/run.json): carried on into the bundle manifest.
    threshold_lineage: Mapping[str, Any] = field(default_factory=dict)
    lineage: Mapping[str, Any] = field(default_factory=dict)
    # Raw-frame runs: the camera frame the model was trained on ({input_format, input_size
    # [height, width], roi [x, y, width, height] or null}); export takes it as its defaults.
    frame: Mapping[str, Any] = field(default_factory=dict)

    def model_config(self) -> ModelConfig:
        """The ModelConfig that rebuilds this model's anomaly head."""
        return ModelConfig(
            prompts=self.prompts,
            n_ctx=self.n_ctx,
            feature_layers=self.feature_layers,
            adapter=self.adapter,
            learn_temperature=self.learn_temperature,
        )


def _short_hash(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:8]


def save_merged(
    model: Any,
    out_dir: str | Path,
    *,
    clip_source: str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    name: str = "model",
    threshold: float | None = None,
    threshold_method: str | None = None,
    source_run: str = "",
    epoch: int | None = None,
    threshold_lineage: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    frame: Mapping[str, Any] | None = None,
) -> MergedInfo:
    """Merge LoRA into `model.clip` IN PLACE (the model keeps working, without adapters) and
    write the merged folder. `model_id` is `<name>-<8 hex of the weights' sha256>`."""
    from safetensors.torch import save_file

    from train.clip_loading import write_preprocessor_config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model.peft_model is not None:
        model.clip = model.peft_model.merge_and_unload()
        object.__setattr__(model, "peft_model", None)
    model.clip.save_pretrained(out, safe_serialization=True)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(out)
    write_preprocessor_config(out, model.image_size, mean, std)
    save_file(model.head_state(), str(out / HEAD_FILE), metadata={"format": FORMAT})
    info = MergedInfo(
        clip_source=str(clip_source),
        model_id=f"{name}-{_short_hash(*sorted(out.glob('*.safetensors')))}",
        mean=tuple(float(v) for v in mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in std),  # type: ignore[arg-type]
        threshold=float(DEFAULT_THRESHOLD if threshold is None else threshold),
        threshold_method=threshold_method or DEFAULT_THRESHOLD_METHOD,
        source_run=str(source_run),
        epoch=epoch,
        threshold_lineage=dict(threshold_lineage or {}),
        lineage=dict(lineage or {}),
        frame=dict(frame or {}),
        **_architecture(model),
    )
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(info)}
    (out / MODEL_JSON).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    log.info(
        "merged model %s written to %s (threshold %.4f: %s)", info.model_id, out, info.threshold, info.threshold_method
    )
    return info


def _architecture(model: Any) -> dict[str, Any]:
    """The MergedInfo fields that describe the model itself (size, prompts, head, patch grid),
    which load_merged needs to rebuild it."""
    size, cfg = model.image_size, model.config
    return {
        "image_size": (int(size[0]), int(size[1])),
        "prompts": tuple(cfg.prompts),
        "feature_layers": tuple(model.feature_layers),
        "n_ctx": cfg.n_ctx,
        "adapter": cfg.adapter,
        "learn_temperature": cfg.learn_temperature,
        "embed_dim": model.embed_dim,
        "patch_size": model.patch_size,
        "grid": tuple(model.grid),
    }


def read_merged_info(path: str | Path) -> MergedInfo:
    """The MergedInfo of merged folder `path`; DataError if it is not one this version reads."""
    p = Path(path) / MODEL_JSON
    if not p.is_file():
        raise DataError(f"not a merged clipinspect model (no {MODEL_JSON}): {Path(path)}")
    doc = read_json(p)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{p}: not a {FORMAT} file")
    version = doc.pop("format_version", None)
    doc.pop("format")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(f"{p}: format_version {version!r} is newer than this clipinspect reads ({FORMAT_VERSION})")
    try:
        return from_mapping(MergedInfo, doc, where=MODEL_JSON)
    except ConfigError as exc:
        raise DataError(f"{p}: {exc}") from None


def load_merged(path: str | Path, device: str = "cpu") -> tuple[Any, MergedInfo]:
    """(AnomalyCLIP in eval mode, MergedInfo) from a merged folder."""
    from safetensors.torch import load_file

    from train.clip_loading import load_clip
    from train.model import AnomalyCLIP

    folder = Path(path)
    info = read_merged_info(folder)
    head = folder / HEAD_FILE
    if not head.is_file():
        raise DataError(f"merged model is missing {HEAD_FILE}: {folder}")
    clip, tokenizer, size, _mean, _std = load_clip(folder)
    model = AnomalyCLIP(clip, tokenizer, info.model_config(), tuple(info.image_size))
    try:
        missing, unexpected = model.head.load_state_dict(load_file(str(head)), strict=False)
    except RuntimeError as exc:
        raise DataError(
            f"{head}: head parameters do not fit {MODEL_JSON} ({str(exc).strip().splitlines()[-1].strip()})"
        ) from None
    if missing or unexpected:
        raise DataError(
            f"{head}: head parameters do not match {MODEL_JSON} "
            f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})"
        )
    return model.to(device).eval(), info


def merge_run(run_dir: Path, out_dir: Path, epoch: int | None = None) -> MergedInfo:
    """Load a run's adapters and merge and save them. The threshold comes from RUN/threshold.json
    (written by eval), which must have been chosen for this run and epoch (ConfigError
    otherwise); without one it is the 0.5 default, and says so. Without --epoch, the epoch
    is the threshold's, else the best validated one, else the last."""
    from train.run_state import (
        check_threshold_lineage,
        default_epoch,
        load_run_model,
        read_run_config,
        read_run_record,
        read_threshold_doc,
        threshold_value,
    )

    read_run_config(run_dir)  # a missing or non-run folder is named as such
    doc = read_threshold_doc(run_dir)
    if epoch is None and doc is not None and isinstance(doc.get("epoch"), int):
        epoch = doc["epoch"]
    ep = default_epoch(run_dir, epoch)
    if doc is not None:
        check_threshold_lineage(run_dir, ep, doc)
    model, run = load_run_model(run_dir, ep)
    value, method = threshold_value(doc)
    keys = (
        "run_id",
        "epoch",
        "epoch_sha256",
        "split",
        "images",
        "data_sha256",
        "frr",
        "far",
        "f1",
        "train_data_sha256",
    )
    rec = read_run_record(run_dir)
    lineage = {
        "run_id": rec.get("run_id", ""),
        "epoch": run.epoch,
        "data_sha256": rec.get("data_sha256", {}),
        "images": rec.get("images", {}),
    }
    return save_merged(
        model,
        out_dir,
        clip_source=run.clip_source,
        mean=run.mean,
        std=run.std,
        name=run.name,
        threshold=value,
        threshold_method=method,
        source_run=str(Path(run_dir).resolve()),
        epoch=run.epoch,
        threshold_lineage={k: doc[k] for k in keys if doc and k in doc},
        lineage=lineage,
        frame=run_frame(run.config),
    )


def run_frame(config: Any) -> dict[str, Any]:
    """The merged model's `frame` record for a run config ({} for model-size RGB runs)."""
    if config.model.frame is None:
        return {}
    fmt, size_hw, roi = config.model.frame
    return {"input_format": fmt, "input_size": list(size_hw), "roi": list(roi) if roi is not None else None}
