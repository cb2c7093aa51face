"""The run folder: what training writes each epoch and how eval/merge read it back.

RUN/config.yaml        resolved TrainConfig (clip source made absolute when it is a folder)
RUN/train.log          the log of every training session on this run
RUN/metrics.jsonl      one JSON line per epoch
RUN/adapters/epoch_NNN/
    adapter_model.safetensors + adapter_config.json   (PEFT save_pretrained)
    head.safetensors                                   (non-LoRA learned parameters)
    optimizer.pt                                       (tensors only; loaded weights_only=True)
    state.json                                         (epoch, step, rng seeds, loss)
RUN/run.json           run id (fixed at the first epoch), data digests per role
RUN/data_manifest.json sha256 of every image/mask with its role (train/val/test/unused)
RUN/threshold.json     value, method, and its lineage: run id, epoch, that epoch's adapter
                       sha256, the validation images' digest and the FRR/FPR on them;
                       written by eval, checked by merge (another epoch or run is refused)
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
from train.jsonfile import read_json

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
HEAD_FILE = "head.safetensors"
OPTIM_FILE = "optimizer.pt"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.jsonl"
ADAPTER_FILE = "adapter_model.safetensors"
THRESHOLD_FILE = "threshold.json"
RUN_FILE = "run.json"
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
        raise DataError(
            f"{folder / ADAPTER_FILE}: LoRA weights do not match the run config "
            f"({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    if missing_h or unexpected_h:
        raise DataError(
            f"{folder / HEAD_FILE}: head parameters do not match the run config "
            f"(missing {sorted(missing_h)}, unexpected {sorted(unexpected_h)})"
        )


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


def threshold_value(doc: dict[str, Any] | None) -> tuple[float, str] | tuple[None, None]:
    """(value, method) of a threshold.json document, as merge records them; (None, None)
    when eval has not written one."""
    return (float(doc["value"]), str(doc.get("method", "eval"))) if doc else (None, None)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of RUN/metrics.jsonl ([] before the first epoch).

    Raises:
        DataError: a line is not JSON (e.g. torn by a crash mid-write); names file and line.
    """
    p = Path(run_dir) / METRICS_FILE
    if not p.is_file():
        return []
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise DataError(f"{p}:{n}: not a JSON line ({exc}); remove it to use this run") from None
    return rows


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """RUN/run.json ({} for runs made before it existed)."""
    p = Path(run_dir) / RUN_FILE
    if not p.is_file():
        return {}
    doc = read_json(p)
    if not isinstance(doc, dict):
        raise DataError(f"{p}: expected a JSON object")
    return doc


def write_run_record(run_dir: str | Path, doc: dict[str, Any]) -> None:
    (Path(run_dir) / RUN_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def epoch_sha256(run_dir: str | Path, epoch: int) -> str:
    """sha256 over the adapter and head files of one epoch: what a threshold was chosen for."""
    import hashlib

    from edge_runtime.bundle import sha256_file

    folder = epoch_dir(Path(run_dir), epoch)
    h = hashlib.sha256()
    for name in (ADAPTER_FILE, HEAD_FILE):
        h.update(f"{name} {sha256_file(folder / name)}\n".encode())
    return h.hexdigest()


def best_epoch(run_dir: str | Path) -> int | None:
    """The epoch with the best validation score in RUN/metrics.jsonl (earliest of ties), or
    None when no epoch was validated. Only epochs still saved count."""
    saved = set(saved_epochs(run_dir))
    rows = [r for r in read_metrics(run_dir) if r.get("val_score") is not None and r.get("epoch") in saved]
    if not rows:
        return None
    criterion = rows[-1].get("val_criterion")
    rows = [r for r in rows if r.get("val_criterion") == criterion]
    return int(max(rows, key=lambda r: (r["val_score"], -r["epoch"]))["epoch"])


def default_epoch(run_dir: str | Path, epoch: int | None) -> int:
    """`epoch` if given, else the best validated epoch, else the last saved one."""
    if epoch is None:
        best = best_epoch(run_dir)
        if best is not None:
            return best
    return resolve_epoch(run_dir, epoch)


def read_threshold_doc(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/threshold.json as written by eval (None without one); DataError if it holds no numeric value."""
    p = Path(run_dir) / THRESHOLD_FILE
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        float(doc["value"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f'cannot read {p}: expected {{"value": float, "method": str, ...}} ({exc})') from None
    return doc


def check_threshold_lineage(run_dir: str | Path, epoch: int, doc: dict[str, Any]) -> None:
    """Refuse (one line) a threshold.json chosen for another epoch or another run."""
    p = Path(run_dir) / THRESHOLD_FILE
    if doc.get("epoch") is None or not doc.get("epoch_sha256"):
        raise ConfigError(f"{p} records no epoch lineage (older eval); run 'clipinspect eval --run {run_dir}' again")
    run_id = read_run_record(run_dir).get("run_id")
    if run_id and doc.get("run_id") != run_id:
        raise ConfigError(f"{p} belongs to run {doc.get('run_id')!r}, not to this run ({run_id}); run eval on this run")
    if int(doc["epoch"]) != epoch:
        raise ConfigError(
            f"{p} was chosen for epoch {doc['epoch']}, not epoch {epoch}; merge --epoch {doc['epoch']}, "
            f"or run eval --epoch {epoch}"
        )
    if doc["epoch_sha256"] != epoch_sha256(run_dir, epoch):
        raise ConfigError(
            f"{p} was chosen for other weights than epoch {epoch} holds now (adapter sha256 differs); run eval again"
        )
