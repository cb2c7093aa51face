"""`eval --shots K`: few-shot metrics with a stated protocol.

Protocol: for each category and each seed s in `seeds`, K distinct good images are drawn
from that category's TRAIN split with `numpy.random.default_rng(s).choice(n, K,
replace=False)` over the train/good images sorted by path (the same draw as the device's
`edge_runtime.fewshot.draw_shots`). Their patch features (the model's own, as the exported
graph returns them) form the memory bank; the test images are scored with the fused
zero-shot + few-shot map (`train.model.fuse_fewshot`). Every metric is the mean over the
seeds (the spread is reported too). The bank never holds a test image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, DataError
from edge_runtime.fewshot import bank_from_features
from edge_runtime.preprocess import upsample_map
from train.data import AnomalyDataset, Sample
from train.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class FewShotResult:
    shots: int
    seeds: tuple[int, ...]
    per_seed: dict[int, dict[str, Metrics]]  # seed -> category -> metrics
    mean: dict[str, dict[str, float | None]]  # category -> metric -> mean over seeds
    spread: dict[str, dict[str, float | None]]  # category -> metric -> std over seeds
    banks: dict[int, dict[str, list[str]]]  # seed -> category -> image files in the bank

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
            "shots": self.shots,
            "seeds": list(self.seeds),
            "mean": self.mean,
            "std": self.spread,
            "banks": {str(k): v for k, v in self.banks.items()},
            "per_seed": {str(s): {c: m.as_dict() for c, m in cats.items()} for s, cats in self.per_seed.items()},
        }


def good_train_images(train_samples: Sequence[Sample], category: str) -> list[Sample]:
    out = sorted((s for s in train_samples if s.category == category and s.label == 0), key=lambda s: str(s.image_path))
    if not out:
        raise DataError(
            f"few-shot eval: category {category!r} has no good images in the train split to draw shots from"
        )
    return out


def draw(samples: Sequence[Sample], shots: int, seed: int) -> list[Sample]:
    if not 1 <= shots <= len(samples):
        raise DataError(f"--shots {shots}: the train split has {len(samples)} good images of {samples[0].category}")
    pick = np.random.default_rng(seed).choice(len(samples), size=shots, replace=False)
    return [samples[int(i)] for i in pick]


def torch_bank(
    model: Any,
    shots: Sequence[Sample],
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    device: str = "cpu",
) -> Any:
    """The [L, K*P, D] bank of `shots` (no padding: the max over rows needs none)."""
    import torch

    ds = AnomalyDataset(shots, image_size, mean, std)
    x = torch.stack([ds[i]["pixel_values"] for i in range(len(ds))]).to(device)
    with torch.no_grad():
        feats, _ = model.patch_features(x)
    return torch.from_numpy(bank_from_features(feats.float().cpu().numpy(), len(shots))).to(device)


def predict_fewshot(
    model: Any, dataset: AnomalyDataset, bank: Any, sigma: float, batch_size: int = 8, device: str = "cpu"
):
    """Like train.evaluate.predict, with the memory bank fed to the model."""
    import torch

    from train.evaluate import Predictions

    n = len(dataset)
    h, w = dataset.image_size
    scores, maps = np.zeros(n, np.float64), np.zeros((n, h, w), np.float32)
    masks, labels = np.zeros((n, h, w), bool), np.zeros(n, np.int64)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        text = model.text_embeddings()
        for batch in loader:
            idx = batch["index"].numpy()
            out = model(batch["pixel_values"].to(device), text, bank)
            scores[idx] = out.score.float().cpu().numpy()
            grid = out.anomaly_map.float().cpu().numpy()
            for j, i in enumerate(idx):
                maps[i] = upsample_map(grid[j], (h, w), sigma=sigma)
            masks[idx] = batch["mask"].numpy() > 0.5
            labels[idx] = batch["label"].numpy()
    return Predictions(scores, maps, masks, labels)


def evaluate_fewshot(
    model: Any,
    samples: Sequence[Sample],
    train_samples: Sequence[Sample],
    shots: int,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    sigma: float = 0.0,
    batch_size: int = 8,
    fpr_limit: float = 0.3,
    device: str = "cpu",
) -> FewShotResult:
    """Few-shot metrics per category, for each seed, and their mean/std over seeds."""
    from train.evaluate import metrics_by_category

    if not seeds:
        raise DataError("few-shot eval needs at least one seed")
    cats = sorted({s.category for s in samples})
    per_seed: dict[int, dict[str, Metrics]] = {}
    banks: dict[int, dict[str, list[str]]] = {}
    for seed in seeds:
        per_seed[seed], banks[seed] = {}, {}
        for cat in cats:
            chosen = draw(good_train_images(train_samples, cat), shots, seed)
            banks[seed][cat] = [str(s.image_path) for s in chosen]
            bank = torch_bank(model, chosen, image_size, mean, std, device)
            test = [s for s in samples if s.category == cat]
            pred = predict_fewshot(model, AnomalyDataset(test, image_size, mean, std), bank, sigma, batch_size, device)
            per_seed[seed].update(metrics_by_category(test, pred, fpr_limit))
            log.info("few-shot K=%d seed %d %s: image AUROC %.4f", shots, seed, cat, per_seed[seed][cat].image_auroc)
    mean, spread = _aggregate(per_seed, cats)
    return FewShotResult(shots, tuple(seeds), per_seed, mean, spread, banks)


def _aggregate(per_seed: dict[int, dict[str, Metrics]], cats: Sequence[str]):
    mean: dict[str, dict[str, float | None]] = {}
    spread: dict[str, dict[str, float | None]] = {}
    for cat in cats:
        rows = [per_seed[s][cat].as_dict() for s in per_seed]
        mean[cat], spread[cat] = {}, {}
        for key, v in rows[0].items():
            if isinstance(v, float) or v is None:
                vals = [r[key] for r in rows if isinstance(r[key], float) and not np.isnan(r[key])]
                mean[cat][key] = float(np.mean(vals)) if vals else None
                spread[cat][key] = float(np.std(vals)) if vals else None
    return mean, spread


def format_fewshot(result: FewShotResult, zero_shot: dict[str, Metrics] | None = None) -> str:
    """Image AUROC / AP and pixel AUROC per category, mean over seeds (± std), next to zero-shot."""
    lines = [
        f"few-shot K={result.shots}, seeds {', '.join(map(str, result.seeds))} (shots drawn from the train split; mean ± std over seeds)",
        f"{'category':<14} {'zero-shot I-AUROC':>18} {'few-shot I-AUROC':>18} {'I-AP':>8} {'P-AUROC':>8}",
    ]
    for cat, m in result.mean.items():
        zs = "-" if zero_shot is None or cat not in zero_shot else f"{100 * zero_shot[cat].image_auroc:.1f}"
        sd = result.spread[cat].get("image_auroc") or 0.0
        pa = m.get("pixel_auroc")
        lines.append(
            f"{cat:<14} {zs:>18} {100 * (m.get('image_auroc') or float('nan')):>11.1f} ± {100 * sd:>4.1f} "
            f"{100 * (m.get('image_ap') or float('nan')):>8.1f} {'-' if pa is None else f'{100 * pa:.1f}':>8}"
        )
    return "\n".join(lines)


def check_fewshot_run(config: Any) -> None:
    """Refuse a run `eval --shots` cannot evaluate, before any work is done.

    Raises:
        ConfigError: a raw-frame run (its bank would have to be built from camera frames).
    """
    if config.model.frame is not None:
        raise ConfigError(
            "eval --shots is not wired for raw-frame runs yet (the bank would have to be built from frames); "
            "'clipinspect enroll --shots K' on the exported raw-frame bundle builds it from camera frames"
        )


def evaluate_run_fewshot(
    run_dir: Any,
    data: Any,
    shots: int,
    *,
    categories: Sequence[str] | None = None,
    epoch: int | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    report: str = "test",
    unseen: bool = False,
    sigma: float | None = None,
    batch_size: int = 8,
    device: str = "cpu",
) -> tuple[FewShotResult, Any]:
    """Load RUN's model, run `evaluate_fewshot` on the `report` images of the run's split plan
    (the same images the zero-shot table reports; with `unseen`, the data set's test split) with
    shots drawn from the plan's train role (with `unseen`, the data set's train split), and
    write RUN/eval/fewshot_k{K}.json. Returns (result, path)."""
    from pathlib import Path

    from train.evaluate import default_sigma, eval_roles
    from train.run_state import default_epoch, load_run_model, read_run_config

    run = Path(run_dir)
    config = read_run_config(run)
    check_fewshot_run(config)
    samples = eval_roles(run, config, data, categories, unseen)[report]
    if not samples:
        raise DataError(f"few-shot eval: no {report} images in {data} for run {run}")
    train = _shot_pool(config, data, sorted({s.category for s in samples}), unseen)
    model, info = load_run_model(run, default_epoch(run, epoch), device=device)
    sig = default_sigma(info.image_size) if sigma is None else sigma
    result = evaluate_fewshot(
        model,
        samples,
        train,
        shots,
        info.image_size,
        info.mean,
        info.std,
        seeds=seeds,
        sigma=sig,
        batch_size=batch_size,
        device=device,
    )
    doc = {"run": str(run), "epoch": info.epoch, "data": str(data), "report": report, "sigma": sig, **result.as_dict()}
    return result, _write_fewshot(run / "eval" / f"fewshot_k{shots}.json", doc)


def _shot_pool(config: Any, data: Any, cats: Sequence[str], unseen: bool) -> list[Any]:
    """The good images shots are drawn from: the run's planned train role, or with `unseen` the
    data set's own train split (of categories `cats`)."""
    from train.data import load_samples

    if unseen:
        return load_samples(data, splits=("train",), categories=cats)
    from train.data import SPLITS
    from train.splits import plan_splits

    pool = load_samples(data, splits=SPLITS, categories=cats, unsplit=config.data.unsplit)
    return plan_splits(pool, config.data, config.optim.seed).role("train")


def _write_fewshot(out: Any, doc: dict[str, Any]) -> Any:
    """Write `doc` as JSON to `out` (creating its folder); returns `out`."""
    import json

    from train.evaluate import _json_safe

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_safe(doc), indent=2) + "\n", encoding="utf-8")
    return out
