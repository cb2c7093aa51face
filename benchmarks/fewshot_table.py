"""Zero-shot vs few-shot image AUROC on the real sample data (../shared/data), with the
models available offline: a random-init tiny CLIP (no training) by default.

    python benchmarks/fewshot_table.py [--data-root ../shared/data] [--shots 1 2 4] [--seeds 0 1 2]

Protocol: train.fewshot_eval (K good shots drawn from each category's train split per seed,
metrics averaged over seeds); zero-shot = the same model with no bank. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CATEGORIES = (("mvtec_ad", "bottle"), ("kolektorsdd", "commutator"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--clip-seed", type=int, default=0, help="init seed of the random tiny CLIP")
    p.add_argument("--arch", default="tiny")
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="RUN=CATEGORY",
        help="instead of the random CLIP: a training run and the category to test it on (repeatable)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from train.clip_loading import load_clip
    from train.clip_presets import make_clip_folder
    from train.model import AnomalyCLIP

    torch.manual_seed(0)
    torch.set_num_threads(2)
    models = []
    if args.run:
        from train.run_state import load_run_model

        for spec in args.run:
            run, _, cat = spec.partition("=")
            model, info = load_run_model(Path(run))
            models.append(
                (
                    f"{cat} (run {Path(run).name}, epoch {info.epoch})",
                    model.eval(),
                    info.image_size,
                    info.mean,
                    info.std,
                    [cat],
                )
            )
    else:
        with tempfile.TemporaryDirectory() as tmp:
            loaded = load_clip(make_clip_folder(Path(tmp) / "clip", arch=args.arch, seed=args.clip_seed))
        model = AnomalyCLIP(loaded.model, loaded.tokenizer, image_size=loaded.image_size).eval()
        models.append((None, model, loaded.image_size, loaded.mean, loaded.std, [c for _, c in CATEGORIES]))
    header = ["category", "zero-shot"] + [
        f"{k}-shot (mean ± std over seeds {','.join(map(str, args.seeds))})" for k in args.shots
    ]
    folders = {c: f for f, c in CATEGORIES}
    rows = []
    for label, model, size, mean, std, cats in models:
        for cat in cats:
            rows.append(
                _row(
                    model,
                    Path(args.data_root) / folders[cat],
                    cat,
                    label or cat,
                    size,
                    mean,
                    std,
                    args.shots,
                    args.seeds,
                )
            )
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    what = (
        "trained runs: " + ", ".join(args.run)
        if args.run
        else f"random-init {args.arch} CLIP (seed {args.clip_seed}), no training"
    )
    print(f"image AUROC (%), {what}, {size[0]}x{size[1]} input")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    return 0


def _row(model, root, cat, label, size, mean, std, shots, seeds) -> list[str]:
    from train.data import AnomalyDataset, load_samples
    from train.evaluate import EvalOptions, metrics_by_category, predict
    from train.fewshot_eval import evaluate_fewshot

    test = load_samples(root, splits=("test",), categories=[cat])
    train = load_samples(root, splits=("train",), categories=[cat])
    zs = metrics_by_category(
        test, predict(model, AnomalyDataset(test, size, mean, std), EvalOptions(sigma=0.0), progress=False)
    )[cat]
    cells = [label, f"{100 * zs.image_auroc:.1f}"]
    for k in shots:
        r = evaluate_fewshot(model, test, train, k, size, mean, std, seeds=seeds)
        cells.append(f"{100 * r.mean[cat]['image_auroc']:.1f} ± {100 * r.spread[cat]['image_auroc']:.1f}")
    return cells


if __name__ == "__main__":
    raise SystemExit(main())
