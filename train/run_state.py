"""The run folder: what training writes each epoch and how eval/merge read it back.

RUN/config.yaml        resolved TrainConfig (clip source made absolute when it is a folder)
RUN/train.log          the log of every training session on this run
RUN/metrics.jsonl      one JSON line per epoch
RUN/adapters/epoch_NNN/
    adapter_model.safetensors + adapter_config.json   (PEFT save_pretrained)
    head.safetensors                                   (non-LoRA learned parameters)
    optimizer.pt                                       (tensors only; loaded weights_only=True)
    state.json                                         (epoch, step, rng seeds, loss)
RUN/threshold.json     {"value", "method"} written by eval, read by merge
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.config import load_config
from edge_runtime.errors import ConfigError, DataError

from train.config import TrainConfig

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
HEAD_FILE = "head.safetensors"
OPTIM_FILE = "optimizer.pt"
STATE_FILE = "state.json"
ADAPTER_FILE = "adapter_model.safetensors"
THRESHOLD_FILE = "threshold.json"
_EPOCH_DIR = re.compile(r"^epoch_(\d{3,})$")


@dataclass(frozen=True)
class RunInfo:
    run_dir: Path
    config: TrainConfig
    epoch: int
    adapter_dir: Path
    clip_source: str
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name


def epoch_dir(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / "adapters" / f"epoch_{epoch:03d}"


def saved_epochs(run_dir: str | Path) -> list[int]:
    root = Path(run_dir) / "adapters"
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _EPOCH_DIR.match(p.name)
        if m and (p / ADAPTER_FILE).is_file() and (p / HEAD_FILE).is_file():
            out.append(int(m.group(1)))
    return sorted(out)


def read_run_config(run_dir: str | Path) -> TrainConfig:
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"run folder not found: {run}")
    cfg = run / CONFIG_FILE
    if not cfg.is_file():
        raise DataError(f"not a training run (no {CONFIG_FILE}): {run}")
    return load_config(TrainConfig, cfg)


def resolve_epoch(run_dir: str | Path, epoch: int | None) -> int:
    epochs = saved_epochs(run_dir)
    if not epochs:
        raise DataError(f"run {run_dir} has no saved adapters (adapters/epoch_NNN)")
    if epoch is None:
        return epochs[-1]
    if epoch not in epochs:
        raise ConfigError(f"epoch {epoch} not saved in {run_dir} (saved: {', '.join(map(str, epochs))})")
    return epoch


def save_adapters(model: Any, folder: Path) -> None:
    """PEFT adapters + head as safetensors into `folder`."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.peft_model.save_pretrained(str(folder), safe_serialization=True)
    save_file(model.head_state(), str(folder / HEAD_FILE))


def load_adapters(model: Any, folder: Path) -> None:
    """Load LoRA and head weights saved by `save_adapters` into a model built with the same
    config; any key mismatch is a DataError naming the folder."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    for name in (ADAPTER_FILE, HEAD_FILE):
        if not (folder / name).is_file():
            raise DataError(f"missing {name} in {folder}")
    lora = load_file(str(folder / ADAPTER_FILE))
    try:
        result = set_peft_model_state_dict(model.peft_model, lora)
        missing_h, unexpected_h = model.head.load_state_dict(load_file(str(folder / HEAD_FILE)), strict=False)
    except RuntimeError as exc:  # shape mismatch: the run config was edited after training
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[0] if first else "")
        raise DataError(f"weights in {folder} do not fit the model of {CONFIG_FILE} ({detail})") from None
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if unexpected or missing:
        raise DataError(f"{folder / ADAPTER_FILE}: LoRA weights do not match the run config "
                        f"({len(missing)} missing, {len(unexpected)} unexpected)")
    if missing_h or unexpected_h:
        raise DataError(f"{folder / HEAD_FILE}: head parameters do not match the run config "
                        f"(missing {sorted(missing_h)}, unexpected {sorted(unexpected_h)})")


def build_run_model(config: TrainConfig) -> tuple[Any, Any]:
    """(AnomalyCLIP with fresh LoRA, LoadedClip) for `config`."""
    from train.clip_loading import load_clip
    from train.model import build_model

    if not config.clip:
        raise ConfigError("no CLIP given: pass --clip FOLDER_OR_HUB_ID (or set 'clip' in the config)")
    loaded = load_clip(config.clip, image_size=config.model.image_size)
    model = build_model(loaded.model, loaded.tokenizer, config.model, config.lora, loaded.image_size)
    return model, loaded


def load_run_model(run_dir: str | Path, epoch: int | None = None, device: str = "cpu") -> tuple[Any, RunInfo]:
    """(AnomalyCLIP with PEFT adapters of `epoch` (default: last saved), in eval mode, RunInfo)."""
    run = Path(run_dir)
    config = read_run_config(run)
    ep = resolve_epoch(run, epoch)
    folder = epoch_dir(run, ep)
    model, loaded = build_run_model(config)
    load_adapters(model, folder)
    info = RunInfo(run, config, ep, folder, config.clip, loaded.image_size, loaded.mean, loaded.std)
    log.info("run %s: loaded adapters of epoch %d", run, ep)
    return model.to(device).eval(), info


def read_threshold(run_dir: str | Path) -> tuple[float, str] | None:
    p = Path(run_dir) / THRESHOLD_FILE
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        return float(doc["value"]), str(doc.get("method", "eval"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read {p}: expected {{\"value\": float, \"method\": str}} ({exc})") from None
