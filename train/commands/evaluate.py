"""`clipinspect eval --run RUN --data D`: per-category metrics (AnomalyCLIP paper layout) on
the test images of the run's split plan, heatmap overlays, the F1-max threshold chosen on the
validation images (with lineage, for merge/export), optional FGSM robustness check."""

from __future__ import annotations

import argparse
from typing import Any

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the `eval` flags on `p`, grouped by what they configure."""
    _add_data_flags(p)
    _add_metric_flags(p)
    _add_threshold_flags(p)
    _add_robustness_flags(p)
    _add_fewshot_flags(p)


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    """The run to evaluate, the images it is evaluated on and the epoch."""
    p.add_argument("--run", required=True, help="training run folder (RUN/config.yaml, RUN/adapters/epoch_NNN)")
    p.add_argument("--data", required=True, help="MVTec/VisA folder, meta.json or CSV")
    p.add_argument("--categories", nargs="+", default=None, help="only these categories (default: all)")
    p.add_argument(
        "--report",
        choices=["test", "val"],
        default="test",
        help="images the table reports: test (default) or val; the threshold always comes from val",
    )
    p.add_argument(
        "--unseen",
        action="store_true",
        help="a data set the run never trained on: its test split is reported (checked by sha256); no threshold",
    )
    p.add_argument(
        "--epoch",
        type=int,
        default=None,
        help="adapters of this epoch (default: the best on validation, else the last saved)",
    )


def _add_metric_flags(p: argparse.ArgumentParser) -> None:
    """How the metrics and heatmaps are computed and where the model runs."""
    p.add_argument(
        "--pixel-resolution",
        choices=["original", "model"],
        default="original",
        help="pixel metrics at each mask's own size (default, MVTec protocol) or at the model's input size",
    )
    p.add_argument("--heatmaps", type=int, default=8, metavar="K", help="overlay PNGs to write (default 8, 0 = none)")
    p.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="Gaussian sigma (px at model size) for the maps (default: 4 at 518 px, scaled)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def _add_threshold_flags(p: argparse.ArgumentParser) -> None:
    """How the threshold is chosen and whether it is written."""
    p.add_argument(
        "--target-frr",
        type=float,
        default=None,
        metavar="FRR",
        help="threshold from the GOOD validation images at this false-reject rate (distribution-free bound, "
        "as `enroll`), instead of F1-max; works when validation has no defects",
    )
    p.add_argument("--no-threshold", action="store_true", help="do not write RUN/threshold.json")


def _add_robustness_flags(p: argparse.ArgumentParser) -> None:
    """The optional FGSM/PGD robustness check."""
    p.add_argument(
        "--fgsm",
        type=float,
        default=None,
        metavar="EPS",
        help="also report image AUROC under an FGSM step of EPS in pixel scale [0,1], e.g. 0.004",
    )
    p.add_argument(
        "--pgd-steps",
        type=int,
        default=None,
        metavar="K",
        help="also report image AUROC under a K-step PGD attack within the --fgsm EPS budget (step 2.5*EPS/K)",
    )


def _add_fewshot_flags(p: argparse.ArgumentParser) -> None:
    """The optional few-shot metrics."""
    p.add_argument(
        "--shots",
        type=int,
        default=0,
        metavar="K",
        help="also report few-shot metrics: K good images per category drawn from the train split as the memory bank",
    )
    p.add_argument(
        "--shot-seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        metavar="SEED",
        help="seeds for drawing the shots; metrics are averaged over them (default 0 1 2)",
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate `args.run` on `args.data`, print the table and summaries, and write RUN/eval/*."""
    from edge_runtime.deps import require

    torch = require("torch", extra="train", purpose="evaluation")

    from train.evaluate import EvalOptions, evaluate_run, resolve_device

    if args.shots < 0:
        from edge_runtime.errors import ConfigError

        raise ConfigError(f"--shots must be >= 1 (or 0 for none), got {args.shots}")
    if args.shots:  # refused before the zero-shot eval runs and writes its files, not after
        from train.fewshot_eval import check_fewshot_run
        from train.run_state import read_run_config

        check_fewshot_run(read_run_config(args.run))
    device = resolve_device(args.device)
    torch.manual_seed(0)  # eval is deterministic; nothing random should run, but be sure
    options = EvalOptions(
        batch_size=args.batch_size,
        sigma=args.sigma,
        fgsm_eps=args.fgsm,
        pgd_steps=args.pgd_steps,
        heatmaps=args.heatmaps,
        device=device,
        pixel_resolution=args.pixel_resolution,
    )
    result, table = evaluate_run(
        args.run,
        args.data,
        categories=args.categories,
        epoch=args.epoch,
        options=options,
        report=args.report,
        unseen=args.unseen,
        target_frr=args.target_frr,
        write_threshold_file=not args.no_threshold,
    )
    print(table)
    _print_threshold(result.threshold_doc, args.report)
    _print_attacks(result)
    print(f"wrote {args.run}/eval/metrics.json, metrics.csv and {len(result.heatmaps)} heatmaps")
    if args.shots:
        _run_fewshot(args, device, result.per_category)
    return 0


def _print_threshold(doc: dict | None, report: str) -> None:
    """The chosen threshold, and its FRR/FAR on the `report` images when known."""
    if doc is None:
        return
    rep = doc.get(report) or {}
    print(f"threshold {doc['value']:.4f} (epoch {doc['epoch']}): {doc['method']}")
    if rep.get("frr") is not None or rep.get("far") is not None:
        pct = lambda v: "-" if v is None else f"{100 * v:.1f} %"  # noqa: E731
        print(
            f"  on the {report} images (reported only): FRR {pct(rep.get('frr'))}, defects accepted (FAR) {pct(rep.get('far'))}"
        )


def _print_attacks(result: Any) -> None:
    """Clean vs perturbed image AUROC of the FGSM and PGD checks that ran."""
    if result.fgsm is not None:
        f = result.fgsm
        print(
            f"FGSM eps={f['eps']:g}: image AUROC (mean over categories) clean {100 * f['clean_image_auroc']:.1f} -> "
            f"perturbed {100 * f['perturbed_image_auroc']:.1f} (mean |score shift| {f['mean_score_shift']:.4f})"
        )
    if result.pgd is not None:
        g = result.pgd
        print(
            f"PGD eps={g['eps']:g} x{g['steps']} steps: image AUROC (mean over categories) clean {100 * g['clean_image_auroc']:.1f} -> "
            f"perturbed {100 * g['perturbed_image_auroc']:.1f} (mean |score shift| {g['mean_score_shift']:.4f})"
        )


def _run_fewshot(args: argparse.Namespace, device: str, zero_shot: dict) -> None:
    """`--shots K`: few-shot metrics next to the zero-shot ones, written to RUN/eval/fewshot_kK.json."""
    from train.fewshot_eval import evaluate_run_fewshot, format_fewshot

    fs, path = evaluate_run_fewshot(
        args.run,
        args.data,
        args.shots,
        categories=args.categories,
        epoch=args.epoch,
        seeds=args.shot_seeds,
        report=args.report,
        unseen=args.unseen,
        sigma=args.sigma,
        batch_size=args.batch_size,
        device=device,
    )
    print(format_fewshot(fs, zero_shot))
    print(f"wrote {path}")


COMMAND = Command(
    help="evaluate a training run: metrics table, heatmaps, threshold, FGSM check", add_arguments=add_arguments, run=run
)
