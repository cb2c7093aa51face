"""`clipinspect train`: LoRA fine-tuning of CLIP, AnomalyCLIP-style, into a run folder."""

from __future__ import annotations

import argparse

from edge_runtime.cli import Command
from edge_runtime.rawframe import INPUT_FORMATS
from edge_runtime.runtime_flags import add_set_flag


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data set: MVTec/VisA folder, meta.json or CSV")
    p.add_argument("--clip", help="CLIP: local Hugging Face folder or hub id (required unless --resume)")
    p.add_argument("--out", required=True, help="run folder (config.yaml, train.log, metrics.jsonl, adapters/)")
    p.add_argument("--config", help="YAML config (sections data, model, lora, loss, optim)")
    add_set_flag(p, "override a config value, e.g. --set lora.rank=4 (repeatable)")
    p.add_argument("--epochs", type=int, help="total number of epochs (optim.epochs)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last saved epoch")
    p.add_argument("--categories", type=_csv, help="comma-separated categories to train on")
    p.add_argument("--holdout", type=_csv, help="comma-separated categories kept out of training")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="auto (default), cpu or cuda (no fallback)")
    p.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help="train at PX x PX (model.image_size), e.g. 336/448/518: above the CLIP's own size the "
        "position embedding is interpolated once at load; must be a multiple of the patch size",
    )
    p.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        help="train on the camera's raw uint8 frames in this format (model.input_format), through the same "
        "ROI/demosaic/resize module the exported graph runs; export then takes the same frame",
    )
    p.add_argument(
        "--input-size", metavar="WxH", help="the frame as the camera delivers it, e.g. 4096x2160 (model.input_size)"
    )
    p.add_argument("--roi", metavar="X,Y,W,H", help="the part of the frame the model sees, in frame pixels (model.roi)")
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train on N local processes with DDP (one per GPU; gloo on CPU) by launching torchrun; "
        "optim.batch_size stays the global batch",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from edge_runtime.deps import require

    for mod in ("torch", "transformers", "peft"):
        require(mod, extra="train", purpose="training")
    from pathlib import Path

    from train.trainer import resolve_config, saved_config_dict, train

    base = saved_config_dict(args.out) if args.resume else None
    if not args.resume and not args.clip and not args.config:
        from edge_runtime.errors import ConfigError

        raise ConfigError("--clip is required (a local CLIP folder or a hub id, e.g. openai/clip-vit-base-patch16)")
    overrides = list(args.overrides)
    if args.image_size is not None:
        overrides.append(f"model.image_size={args.image_size}")
    if args.input_format is not None:
        overrides.append(f"model.input_format={args.input_format}")
    if args.input_size is not None:
        overrides.append(f"model.input_size={args.input_size}")
    if args.roi is not None:
        overrides.append(f"model.roi=[{args.roi}]")
    config = resolve_config(
        args.config,
        overrides,
        clip=args.clip,
        epochs=args.epochs,
        categories=args.categories,
        holdout=args.holdout,
        device=args.device,
        base=base,
    )
    if args.nproc is not None:
        return _launch(args, config)
    result = train(args.data, Path(args.out), config, resume=args.resume, progress=not args.no_progress)
    from train.distributed import context

    if not context().is_main:  # under torchrun: rank 0 prints the summary
        return 0
    print(f"{result.trainable_line}; device {result.device}, AMP {'on' if result.amp else 'off'}")
    print(f"{'epoch':>5}  {'loss':>8}  {'image':>8}  {'focal':>8}  {'dice':>8}  {'s':>6}")
    for r in result.epochs:
        print(
            f"{r['epoch']:>5}  {r['loss']:>8.4f}  {r['loss_image']:>8.4f}  {r['loss_focal']:>8.4f}  "
            f"{r['loss_dice']:>8.4f}  {r['seconds']:>6.1f}"
        )
    print(f"adapters: {Path(args.out) / 'adapters'} (epochs {result.first_epoch}..{result.last_epoch})")
    return 0


def _launch(args: argparse.Namespace, config) -> int:
    """Check everything a worker would refuse (config, data, run folder, GPUs) here, in one
    line, then hand the resolved config to `torchrun ... -m train.ddp`."""
    import os
    import tempfile
    from pathlib import Path

    from edge_runtime.config import save_config
    from edge_runtime.errors import ConfigError
    from train.distributed import DistContext, launch, local_batch_size
    from train.trainer import pick_device, run_folder_start, training_samples

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    if "WORLD_SIZE" in os.environ:
        raise ConfigError(
            "--nproc inside torchrun would launch torchrun again: torchrun's --nproc-per-node sets the process count"
        )
    local_batch_size(config.optim.batch_size, DistContext(world_size=args.nproc))
    device = pick_device(config.optim.device)
    if device == "cuda":
        import torch

        if torch.cuda.device_count() < args.nproc:
            raise ConfigError(
                f"--nproc {args.nproc} but torch sees {torch.cuda.device_count()} GPU(s); "
                "one process per GPU (or --device cpu)"
            )
    run_folder_start(Path(args.out), config, args.resume)
    samples = training_samples(config, args.data)
    if len(samples) < args.nproc:
        raise ConfigError(f"{len(samples)} training images cannot feed {args.nproc} processes")
    with tempfile.TemporaryDirectory(prefix="clipinspect-ddp-") as tmp:
        resolved = Path(tmp) / "config.yaml"
        save_config(config, resolved)
        worker = ["--data", str(args.data), "--out", str(args.out), "--config", str(resolved)]
        worker += ["--resume"] if args.resume else []
        worker += ["--no-progress"] if args.no_progress else []
        return launch(args.nproc, worker)


COMMAND = Command(
    help="fine-tune CLIP with LoRA for anomaly detection (AnomalyCLIP-style)", add_arguments=add_arguments, run=run
)
