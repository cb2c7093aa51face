"""The training loop: seeded, resumable, one adapter checkpoint per epoch in the run folder.

AMP (autocast + GradScaler) runs on CUDA only. Data order is a function of (seed, epoch), so
a run resumed after epoch k sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_runtime.config import apply_overrides, from_mapping, load_yaml, save_config, set_key
from edge_runtime.errors import BackendUnavailable, ConfigError, DataError
from train import distributed
from train.config import TrainConfig
from train.run_state import (
    CONFIG_FILE,
    METRICS_FILE,
    OPTIM_FILE,
    STATE_FILE,
    build_run_model,
    epoch_dir,
    load_adapters,
    save_adapters,
    saved_epochs,
)

log = logging.getLogger(__name__)
LOG_FILE = "train.log"


@dataclass
class TrainResult:
    """What a training call did: run folder, device, AMP, epochs trained and their records."""

    run_dir: Path
    device: str
    amp: bool
    first_epoch: int
    last_epoch: int
    trainable_line: str
    epochs: list[dict[str, Any]] = field(default_factory=list)


def resolve_config(
    config_file: str | Path | None,
    overrides: Sequence[str],
    *,
    clip: str | None = None,
    epochs: int | None = None,
    categories: Sequence[str] | None = None,
    holdout: Sequence[str] | None = None,
    device: str | None = None,
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """TrainConfig from (saved run config | YAML file) + --set overrides + explicit flags."""
    data: dict[str, Any] = _merge(base or {}, load_yaml(config_file) if config_file else {})
    data = apply_overrides(data, overrides)
    flags = {
        "clip": clip or None,
        "optim.epochs": epochs,
        "optim.device": device,
        "data.categories": list(categories) if categories is not None else None,
        "data.holdout": list(holdout) if holdout is not None else None,
    }
    for key, value in flags.items():
        if value is not None:
            set_key(data, key, value)
    cfg = from_mapping(TrainConfig, data)
    clip_path = Path(cfg.clip).expanduser()
    if cfg.clip and clip_path.is_dir():  # a local folder: make the run loadable from any cwd
        cfg = replace(cfg, clip=str(clip_path.resolve()))
    return cfg


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def pick_device(wanted: str) -> str:
    """ "cuda" or "cpu" for `wanted` ("auto" picks CUDA when torch sees one); BackendUnavailable for a missing GPU."""
    import torch

    if wanted == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(
            "device 'cuda' requested but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
            "use --device cpu to train on the CPU"
        )
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random generators."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    old_level = root.level
    # the file always gets INFO; the console keeps the verbosity the user chose (-q/-v)
    quiet = [h for h in root.handlers if h.level == logging.NOTSET]
    for h in quiet:
        h.setLevel(old_level)
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for h in quiet:
            h.setLevel(logging.NOTSET)
        handler.close()


def split_plan(config: TrainConfig, data: str | Path) -> Any:
    """The train/val/test plan of `data` under `config` (train.splits); eval uses the same."""
    from train.data import SPLITS, load_samples
    from train.splits import plan_splits

    samples = load_samples(data, splits=SPLITS, categories=config.data.categories, unsplit=config.data.unsplit)
    held = set(config.data.holdout)
    unknown = held - {s.category for s in samples}
    if unknown and not config.data.categories:
        raise DataError(f"holdout category '{sorted(unknown)[0]}' not in {data}")
    return plan_splits(samples, config.data, config.optim.seed)


def training_samples(config: TrainConfig, data: str | Path, plan: Any = None) -> list[Any]:
    """The plan's training images (capped at data.max_images, seeded); DataError when none are left."""
    plan = plan or split_plan(config, data)
    held = set(config.data.holdout)
    samples = plan.role("train")
    if not samples:
        raise DataError(
            f"no training images left in {data} after holding out {', '.join(sorted(held)) or 'nothing'} "
            f"and setting aside validation/test images ({plan.summary()})"
        )
    if config.data.max_images and len(samples) > config.data.max_images:
        rng = random.Random(config.optim.seed)
        samples = sorted(rng.sample(samples, config.data.max_images), key=lambda s: str(s.image_path))
    return samples


def run_folder_start(run: Path, config: TrainConfig, resume: bool) -> tuple[list[int], int]:
    """(saved epochs, first epoch to train); refuses a run folder that does not fit `resume`."""
    done = saved_epochs(run)
    if done and not resume:
        raise ConfigError(
            f"run folder {run} already holds epochs {done[0]}..{done[-1]}: "
            "pass --resume to continue it or choose another --out"
        )
    if resume and not done:
        raise ConfigError(f"nothing to resume in {run}: no saved epoch under {run / 'adapters'}")
    start = (done[-1] + 1) if done else 1
    if start > config.optim.epochs:
        raise ConfigError(f"run {run} already has {done[-1]} epochs; ask for more with --epochs N (N > {done[-1]})")
    return done, start


def train(
    data: str | Path, run_dir: str | Path, config: TrainConfig, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train `config` on `data` into `run_dir`. With `resume`, continue after the last saved
    epoch up to `config.optim.epochs` (the total, not a count of extra epochs)."""
    import torch

    run = Path(run_dir)
    done, start = run_folder_start(run, config, resume)
    device = pick_device(config.optim.device)
    plan = split_plan(config, data)  # before touching the run folder: bad data leaves no trace
    samples = training_samples(config, data, plan)
    checked = verify_data(config, data, plan)
    ctx = distributed.context()
    device = distributed.setup(ctx, device)
    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
        save_config(config, run / CONFIG_FILE)
        record_data(run, data, plan, samples, resume=bool(done), checked=checked)
    threads = torch.get_num_threads()
    if config.optim.threads:
        torch.set_num_threads(config.optim.threads)
    try:
        with _log_to(run / LOG_FILE) if ctx.is_main else nullcontext():
            return _train(
                config, run, samples, device, done, start, progress and ctx.is_main, ctx, val=plan.role("val")
            )
    finally:
        torch.set_num_threads(threads)
        distributed.teardown(ctx)


def _train(
    config: TrainConfig,
    run: Path,
    samples: list[Any],
    device: str,
    done: list[int],
    start: int,
    progress: bool,
    ctx: distributed.DistContext | None = None,
    val: list[Any] | None = None,
) -> TrainResult:
    import torch

    from train.model import log_parameters

    ctx = ctx if ctx is not None else distributed.DistContext()
    seed_everything(config.optim.seed)
    model, loaded = build_run_model(config)
    trainable_line = log_parameters(model)
    model.to(device)
    dataset, val_set = _datasets(config, samples, val, loaded)
    loop = _Loop.create(config, model, loaded, device, ctx)
    if done:
        loop.resume(run, done[-1])
    log.info(
        "training on %s (%s), AMP %s; %d images (%d anomalous, %d with pixel truth); epochs %d..%d",
        device,
        torch.get_default_dtype(),
        "on (float16)" if loop.use_amp else "off",
        len(samples),
        sum(s.label for s in samples),
        sum(bool(s.pixel_gt) for s in samples),
        start,
        config.optim.epochs,
    )
    result = TrainResult(run, device, loop.use_amp, start, config.optim.epochs, trainable_line)
    for epoch in range(start, config.optim.epochs + 1):
        record = loop.epoch(dataset, epoch, ctx, progress)
        result.epochs.append(record)
        if not ctx.is_main:  # rank 0 alone validates and writes the run folder; the others wait for it
            distributed.barrier(ctx)
            continue
        if val_set is not None:  # picks the best epoch (run_state.best_epoch); test is never looked at
            from train.validation import validate

            record.update(validate(loop.net, val_set, config, device, config.optim.batch_size))
        loop.save(run, epoch, record)
        distributed.barrier(ctx)
    return result


def _datasets(config: TrainConfig, samples: list[Any], val: list[Any] | None, loaded: Any) -> tuple[Any, Any]:
    """(training set with augmentation, validation set or None): model-size RGB images, or for a
    raw-frame run the camera's frames, so the graph's own preprocessing is in the trained forward."""
    from train.augment import with_augmentation
    from train.data import AnomalyDataset
    from train.frame_module import raw_frame_samples

    size, mean, std = loaded.image_size, loaded.mean, loaded.std
    if config.model.frame is None:
        dataset = with_augmentation(AnomalyDataset(samples, size, mean, std), config.augment, config.optim.seed)
        return dataset, (AnomalyDataset(val, size, mean, std) if val else None)
    dataset = raw_frame_samples(samples, config.model, size, mean, std, config.augment, config.optim.seed)
    val_set = raw_frame_samples(val, config.model, size, mean, std) if val else None
    fmt, (fh, fw), roi = config.model.frame
    log.info(
        "raw-frame training: %s %dx%d frames, ROI %s", fmt, fw, fh, ",".join(map(str, roi)) if roi else "whole frame"
    )
    return dataset, val_set


@dataclass
class _Loop:
    """The training loop's moving parts: model, its (DDP-wrapped) forward, optimiser, AMP scaler."""

    config: TrainConfig
    model: Any
    loaded: Any  # build_run_model's CLIP info: image size, mean, std
    net: Any  # `model` itself for RGB runs, model + in-graph preprocessing for raw-frame runs
    forward: Any
    params: list[Any]
    optim: Any
    scaler: Any
    use_amp: bool
    device: str
    batch_size: int

    @classmethod
    def create(cls, config: TrainConfig, model: Any, loaded: Any, device: str, ctx: distributed.DistContext) -> _Loop:
        """AdamW on the trainable parameters; AMP (float16 autocast + GradScaler) on CUDA only."""
        import torch

        from train.frame_module import raw_frame_model

        net = raw_frame_model(model, config.model, loaded.image_size, loaded.mean, loaded.std)
        params = [p for p in model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        use_amp = bool(config.optim.amp and device.startswith("cuda"))
        forward = distributed.training_forward(net, ctx, device)  # DDP-wrapped when under torchrun
        batch_size = distributed.local_batch_size(config.optim.batch_size, ctx)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        return cls(config, model, loaded, net, forward, params, optim, scaler, use_amp, device, batch_size)

    def resume(self, run: Path, epoch: int) -> None:
        """Adapters, optimiser and scaler state as saved after `epoch`."""
        import torch

        folder = epoch_dir(run, epoch)
        load_adapters(self.model, folder)
        state = torch.load(folder / OPTIM_FILE, map_location=self.device, weights_only=True)
        self.optim.load_state_dict(state["optimizer"])
        if self.use_amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        log.info("resuming %s after epoch %d", run, epoch)

    def epoch(self, dataset: Any, epoch: int, ctx: distributed.DistContext, progress: bool) -> dict[str, Any]:
        """Train one epoch on this rank's share of `dataset`; the record (losses over all ranks)."""
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        from train.augment import set_epoch

        cfg = self.config.optim
        set_epoch(dataset, epoch)
        sampler = distributed.epoch_sampler(dataset, cfg.seed, epoch, ctx)
        loader = DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=cfg.num_workers, drop_last=False
        )
        self.model.train()
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "image": 0.0, "focal": 0.0, "dice": 0.0}
        seen = 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not progress, leave=False)
        for batch in bar:
            n, parts = self.step(batch)
            seen += n
            for key, value in zip(("loss", "image", "focal", "dice"), parts):
                sums[key] += float(value.detach()) * n
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}")
        bar.close()
        sums, seen = distributed.reduce_sums(sums, seen, ctx, self.device)
        return {
            "epoch": epoch,
            **{("loss" if k == "loss" else f"loss_{k}"): v / max(seen, 1) for k, v in sums.items()},
            "lr": self.optim.param_groups[0]["lr"],
            "images": seen,
            "seconds": round(time.perf_counter() - t0, 3),
            "device": self.device,
            "amp": self.use_amp,
        }

    def step(self, batch: Mapping[str, Any]) -> tuple[int, Any]:
        """One optimisation step on `batch` (FGSM examples mixed in when configured); (images, loss parts)."""
        import torch

        from train.adversarial import fgsm_batch
        from train.frame_module import batch_input
        from train.losses import anomaly_loss

        config, device = self.config, self.device
        pix = batch_input(batch).to(device, non_blocking=True)
        labels = batch["label"].to(device)
        masks = batch["mask"].to(device)
        has_mask = batch["has_mask"].to(device)
        if config.adversarial.fraction > 0:
            pix = fgsm_batch(self.model, pix, labels, masks, has_mask, config, self.loaded.mean, self.loaded.std)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.use_amp):
            out = self.forward(pix)
        parts = anomaly_loss(out.global_logits, out.patch_logits, labels, masks, has_mask, config.loss)
        self.optim.zero_grad(set_to_none=True)
        self.scaler.scale(parts.total).backward()
        if config.optim.grad_clip:
            self.scaler.unscale_(self.optim)
            torch.nn.utils.clip_grad_norm_(self.params, config.optim.grad_clip)
        self.scaler.step(self.optim)
        self.scaler.update()
        return int(pix.shape[0]), parts

    def save(self, run: Path, epoch: int, record: Mapping[str, Any]) -> None:
        """RUN/adapters/epoch_N (adapters, optimiser + scaler state, epoch state) and a metrics line."""
        import torch

        folder = epoch_dir(run, epoch)
        save_adapters(self.model, folder)
        torch.save(
            {"optimizer": self.optim.state_dict(), "scaler": self.scaler.state_dict() if self.use_amp else {}},
            folder / OPTIM_FILE,
        )
        (folder / STATE_FILE).write_text(
            json.dumps({"epoch": epoch, "loss": record["loss"], "seed": self.config.optim.seed}, indent=2) + "\n",
            encoding="utf-8",
        )
        with (run / METRICS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        log.info(
            "epoch %d: loss %.4f (image %.4f, focal %.4f, dice %.4f) in %.1f s -> %s",
            epoch,
            record["loss"],
            record["loss_image"],
            record["loss_focal"],
            record["loss_dice"],
            record["seconds"],
            folder,
        )


def verify_data(config: TrainConfig, data: str | Path, plan: Any) -> dict[str, str]:
    """With data.manifest set, the images must still be what `check-data --write-manifest`
    recorded (DataError naming the first changed file)."""
    if not config.data.manifest:
        return {}
    from train.data_manifest import verify_manifest

    every = [*plan.train, *plan.val, *plan.test]
    return {
        "manifest": str(Path(config.data.manifest).resolve()),
        "sha256": verify_manifest(config.data.manifest, data, every),
    }


def record_data(
    run: Path, data: str | Path, plan: Any, samples: list[Any], resume: bool, checked: dict[str, str] | None = None
) -> None:
    """RUN/data_manifest.json (sha256 of every image and mask, with its role) and RUN/run.json
    (run id, digests). A resumed run must see the same training and validation images."""
    import uuid

    from train.data_manifest import RUN_MANIFEST, build_manifest, write_manifest
    from train.run_state import read_run_record, write_run_record

    roles = {"train": samples, "val": plan.role("val"), "test": plan.role("test")}
    every = [*roles["train"], *roles["val"], *roles["test"]]
    doc = build_manifest(data, every, roles)
    digests = {r: v["sha256"] for r, v in doc["roles"].items()}
    old = read_run_record(run)
    if resume and old.get("data_sha256"):
        for role in ("train", "val"):
            if old["data_sha256"].get(role) != digests[role]:
                raise DataError(
                    f"the {role} images of {data} differ from those run {run} started with "
                    f"({old['data_sha256'].get(role, '?')[:12]} vs {digests[role][:12]}); resume on the same data"
                )
        return
    write_manifest(run / RUN_MANIFEST, doc)
    write_run_record(
        run,
        {
            "run_id": old.get("run_id") or uuid.uuid4().hex,
            "data": str(Path(data).resolve()),
            "data_sha256": digests,
            "images": {r: len(v) for r, v in roles.items()},
            "verified_manifest": checked or {},
        },
    )
    log.info("data %s: %s; digests recorded in %s", data, plan.summary(), run / RUN_MANIFEST)


def saved_config_dict(run_dir: str | Path) -> dict[str, Any]:
    """The run's saved config as a plain mapping (the base a resumed run starts from)."""
    p = Path(run_dir) / CONFIG_FILE
    if not p.is_file():
        raise ConfigError(f"nothing to resume: {p} not found")
    return load_yaml(p)
