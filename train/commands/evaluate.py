"""`clipinspect eval --run RUN --data D`: per-category metrics (AnomalyCLIP paper layout),
heatmap overlays, the F1-max threshold for merge/export, optional FGSM robustness check."""

from __future__ import annotations

import argparse

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="training run folder (RUN/config.yaml, RUN/adapters/epoch_NNN)")
    p.add_argument("--data", required=True, help="MVTec/VisA folder, meta.json or CSV")
    p.add_argument("--categories", nargs="+", default=None, help="only these categories (default: all)")
    p.add_argument("--splits", nargs="+", default=["test"], choices=["train", "test"],
                   help="splits to evaluate (default: test; CSV without a split column: every row)")
    p.add_argument("--epoch", type=int, default=None, help="adapters of this epoch (default: last saved)")
    p.add_argument("--fgsm", type=float, default=None, metavar="EPS",
                   help="also report image AUROC under an FGSM step of EPS in pixel scale [0,1], e.g. 0.004")
    p.add_argument("--heatmaps", type=int, default=8, metavar="K", help="overlay PNGs to write (default 8, 0 = none)")
    p.add_argument("--sigma", type=float, default=None,
                   help="Gaussian sigma (px at model size) for the maps (default: 4 at 518 px, scaled)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-threshold", action="store_true", help="do not write RUN/threshold.json")
    p.add_argument("--shots", type=int, default=0, metavar="K",
                   help="also report few-shot metrics: K good images per category drawn from the train split as the memory bank")
    p.add_argument("--shot-seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                   help="seeds for drawing the shots; metrics are averaged over them (default 0 1 2)")


def run(args: argparse.Namespace) -> int:
    from edge_runtime.deps import require

    torch = require("torch", extra="train", purpose="evaluation")

    from train.evaluate import EvalOptions, evaluate_run, resolve_device

    if args.shots < 0:
        from edge_runtime.errors import ConfigError

        raise ConfigError(f"--shots must be >= 1 (or 0 for none), got {args.shots}")
    device = resolve_device(args.device)
    torch.manual_seed(0)  # eval is deterministic; nothing random should run, but be sure
    options = EvalOptions(batch_size=args.batch_size, sigma=args.sigma, fgsm_eps=args.fgsm,
                          heatmaps=args.heatmaps, device=device)
    result, table = evaluate_run(args.run, args.data, categories=args.categories, epoch=args.epoch,
                                 options=options, splits=tuple(args.splits),
                                 write_threshold_file=not args.no_threshold)
    print(table)
    if result.threshold is not None:
        print(f"threshold {result.threshold[0]:.4f}: {result.threshold[1]}")
    if result.fgsm is not None:
        f = result.fgsm
        print(f"FGSM eps={f['eps']:g}: image AUROC (mean over categories) clean {100 * f['clean_image_auroc']:.1f} -> "
              f"perturbed {100 * f['perturbed_image_auroc']:.1f} (mean |score shift| {f['mean_score_shift']:.4f})")
    print(f"wrote {args.run}/eval/metrics.json, metrics.csv and {len(result.heatmaps)} heatmaps")
    if args.shots:
        from train.fewshot_eval import evaluate_run_fewshot, format_fewshot

        fs, path = evaluate_run_fewshot(args.run, args.data, args.shots, categories=args.categories, epoch=args.epoch,
                                        seeds=args.shot_seeds, splits=tuple(args.splits), sigma=args.sigma,
                                        batch_size=args.batch_size, device=device)
        print(format_fewshot(fs, result.per_category))
        print(f"wrote {path}")
    return 0


COMMAND = Command(help="evaluate a training run: metrics table, heatmaps, threshold, FGSM check",
                  add_arguments=add_arguments, run=run)
