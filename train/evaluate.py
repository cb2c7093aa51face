"""Evaluation of a trained run: per-category metrics in the AnomalyCLIP paper layout, heatmap
overlays, the F1-max threshold for the bundle, and an optional FGSM robustness check.

Maps are compared with masks at the model's input size (images are resized straight to it,
as on the device), after bilinear upsampling of the patch-grid map and a Gaussian blur. The
default blur is AnomalyCLIP's sigma 4 at 518 px, scaled to the model size.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.preprocess import upsample_map
from train.data import AnomalyDataset, Sample
from train.metrics import IMAGE_KEYS, PIXEL_KEYS, Metrics, auroc, compute_metrics, f1_max_margin_threshold, mean_metrics

log = logging.getLogger(__name__)

REFERENCE_SIGMA = 4.0  # AnomalyCLIP's Gaussian sigma at 518 px
REFERENCE_SIZE = 518


@dataclass(frozen=True)
class EvalOptions:
    batch_size: int = 8
    sigma: float | None = None  # None: REFERENCE_SIGMA scaled to the model size
    fgsm_eps: float | None = None  # FGSM step in pixel space [0, 1]
    pgd_steps: int | None = None  # also a PGD attack of this many steps within the --fgsm budget
    heatmaps: int = 8
    fpr_limit: float = 0.3
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch size must be >= 1")
        if self.sigma is not None and self.sigma < 0:
            raise ConfigError("sigma must be >= 0")
        if self.fgsm_eps is not None and not 0 < self.fgsm_eps <= 1:
            raise ConfigError(f"--fgsm must be in (0, 1] (pixel scale), got {self.fgsm_eps}")
        if self.pgd_steps is not None and (self.fgsm_eps is None or self.pgd_steps < 1):
            raise ConfigError("--pgd-steps needs --fgsm EPS (the attack budget) and must be >= 1")
        if self.heatmaps < 0:
            raise ConfigError("--heatmaps must be >= 0")


@dataclass
class Predictions:
    scores: np.ndarray  # [N] float64
    maps: np.ndarray  # [N, H, W] float32, upsampled + smoothed
    masks: np.ndarray  # [N, H, W] bool at model size
    labels: np.ndarray  # [N] int


@dataclass
class EvalResult:
    per_category: dict[str, Metrics]
    mean: dict[str, float | None]
    threshold: tuple[float, str] | None
    fgsm: dict[str, Any] | None = None
    pgd: dict[str, Any] | None = None
    heatmaps: list[Path] = field(default_factory=list)


def default_sigma(image_size: tuple[int, int]) -> float:
    return REFERENCE_SIGMA * min(image_size) / REFERENCE_SIZE


# ------------------------------------------------------------------ inference


def _loader(dataset: AnomalyDataset, batch_size: int) -> Any:
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def predict(model: Any, dataset: AnomalyDataset, options: EvalOptions, progress: bool = True) -> Predictions:
    """Scores and image-size maps for every item of `dataset`, in order."""
    import torch
    from tqdm import tqdm

    sigma = default_sigma(dataset.image_size) if options.sigma is None else options.sigma
    n = len(dataset)
    h, w = dataset.image_size
    scores = np.zeros(n, np.float64)
    maps = np.zeros((n, h, w), np.float32)
    masks = np.zeros((n, h, w), bool)
    labels = np.zeros(n, np.int64)
    with torch.no_grad():
        text = model.text_embeddings()
        for batch in tqdm(_loader(dataset, options.batch_size), desc="eval", unit="batch", disable=not progress):
            idx = batch["index"].numpy()
            out = model(batch["pixel_values"].to(options.device), text)
            scores[idx] = out.score.float().cpu().numpy()
            grid = out.anomaly_map.float().cpu().numpy()
            for j, i in enumerate(idx):
                maps[i] = upsample_map(grid[j], (h, w), sigma=sigma)
            masks[idx] = batch["mask"].numpy() > 0.5
            labels[idx] = batch["label"].numpy()
    return Predictions(scores, maps, masks, labels)


def fgsm_scores(model: Any, dataset: AnomalyDataset, eps: float, options: EvalOptions, progress: bool = True) -> np.ndarray:
    """Image scores after one FGSM step of size `eps` in pixel space [0, 1].

    The attacked loss is the binary cross-entropy of the image score (the number the device
    thresholds) against the true label; each pixel moves by eps * sign(d loss / d pixel),
    is clipped to [0, 1] and re-normalised with the model's mean/std. The perturbed image is
    kept in float (not re-quantised to uint8), so eps below 1/255 still has an effect.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    mean = torch.tensor(dataset.mean, device=options.device).view(1, 3, 1, 1)
    std = torch.tensor(dataset.std, device=options.device).view(1, 3, 1, 1)
    out_scores = np.zeros(len(dataset), np.float64)
    with torch.no_grad():
        text = model.text_embeddings()
    for batch in tqdm(_loader(dataset, options.batch_size), desc=f"fgsm eps={eps:g}", unit="batch", disable=not progress):
        idx = batch["index"].numpy()
        x = (batch["pixel_values"].to(options.device) * std + mean).clamp(0, 1).detach().requires_grad_(True)
        score = model((x - mean) / std, text).score.float().clamp(1e-6, 1 - 1e-6)
        loss = F.binary_cross_entropy(score, batch["label"].to(options.device).float())
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x_adv = (x + eps * grad.sign()).clamp(0, 1)
            out_scores[idx] = model((x_adv - mean) / std, text).score.float().cpu().numpy()
    return out_scores


def pgd_scores(model: Any, dataset: AnomalyDataset, eps: float, steps: int, options: EvalOptions,
               progress: bool = True) -> tuple[np.ndarray, float]:
    """Image scores after a `steps`-step PGD attack (train/adversarial.py) on the same loss and
    in the same pixel space as `fgsm_scores`, within an L-inf ball of `eps`; also the mean loss."""
    import torch
    from tqdm import tqdm

    from train.adversarial import pgd, score_loss

    out_scores = np.zeros(len(dataset), np.float64)
    total = 0.0
    with torch.no_grad():
        text = model.text_embeddings()
    for batch in tqdm(_loader(dataset, options.batch_size), desc=f"pgd eps={eps:g} x{steps}", unit="batch", disable=not progress):
        idx = batch["index"].numpy()
        labels = batch["label"].to(options.device)
        x_adv = pgd(model, batch["pixel_values"].to(options.device), labels, text, dataset.mean, dataset.std, eps, steps)
        with torch.no_grad():
            score = model(x_adv, text).score
            out_scores[idx] = score.float().cpu().numpy()
            total += float(score_loss(score, labels)) * len(idx)
    return out_scores, total / len(dataset)


# ------------------------------------------------------------------ metrics


def _pgd_report(model: Any, dataset: AnomalyDataset, samples: Sequence[Sample], pred: Predictions, options: EvalOptions,
                progress: bool) -> dict[str, Any]:
    eps, steps = float(options.fgsm_eps), int(options.pgd_steps)
    adv, loss = pgd_scores(model, dataset, eps, steps, options, progress)
    per = {}
    for cat in sorted({s.category for s in samples}):
        idx = np.array([i for i, s in enumerate(samples) if s.category == cat])
        per[cat] = {"clean": auroc(pred.labels[idx], pred.scores[idx]), "perturbed": auroc(pred.labels[idx], adv[idx])}
    return {
        "eps": eps, "steps": steps, "step_size": 2.5 * eps / steps,
        "loss": "BCE of image score vs label; L-inf ball in pixel space [0,1], clipped, float; no random start",
        "clean_image_auroc": _nanmean([v["clean"] for v in per.values()]),
        "perturbed_image_auroc": _nanmean([v["perturbed"] for v in per.values()]),
        "pooled_perturbed_image_auroc": auroc(pred.labels, adv),
        "mean_attack_loss": loss,
        "mean_score_shift": float(np.mean(np.abs(adv - pred.scores))),
        "per_category": per,
    }


def metrics_by_category(samples: Sequence[Sample], pred: Predictions, fpr_limit: float = 0.3) -> dict[str, Metrics]:
    """Metrics per category; pixel metrics over the images with pixel truth (None if none)."""
    cats = sorted({s.category for s in samples})
    out: dict[str, Metrics] = {}
    for cat in cats:
        idx = np.array([i for i, s in enumerate(samples) if s.category == cat])
        pix = np.array([i for i in idx if samples[i].pixel_gt], dtype=np.int64)
        masks = pred.masks[pix] if pix.size else None
        maps = pred.maps[pix] if pix.size else None
        out[cat] = compute_metrics(pred.labels[idx], pred.scores[idx], masks, maps, fpr_limit=fpr_limit)
    return out


def pick_heatmap_indices(samples: Sequence[Sample], k: int) -> list[int]:
    """Up to k images covering the data: round-robin over categories, and within a category
    round-robin over its defect classes (good last), so small k still shows every defect."""
    if k <= 0:
        return []
    queues = []
    for cat in sorted({s.category for s in samples}):
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            if s.category == cat:
                groups.setdefault(s.defect if s.label else "\uffff", []).append(i)  # good sorts last
        queues.append(_round_robin([groups[d] for d in sorted(groups)]))
    return _round_robin(queues)[:k]


def _round_robin(lists: list[list[int]]) -> list[int]:
    out: list[int] = []
    for j in range(max((len(x) for x in lists), default=0)):
        out.extend(x[j] for x in lists if j < len(x))
    return out


# ------------------------------------------------------------------ output


def _pct(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    return f"{100 * v:.1f}"


def format_table(per_category: dict[str, Metrics], mean: dict[str, float | None], held_out: Sequence[str] = ()) -> str:
    """The AnomalyCLIP paper layout: rows are categories + mean; columns pixel-level
    (AUROC, AUPRO, AP) | image-level (AUROC, AP, F1-max), in percent. '-' = no pixel
    truth in the data, 'n/a' = undefined (one class only). Categories in `held_out` (kept
    out of training) are marked with '*'."""
    marked = [c for c in per_category if c in set(held_out)]
    names = [f"{c}*" if c in marked else c for c in per_category] + ["mean"]
    w = max(8, *(len(n) for n in names))
    head1 = f"{'':<{w}} | {'pixel-level':^22} | {'image-level':^22}"
    head2 = f"{'category':<{w}} | {'AUROC':>6} {'AUPRO':>7} {'AP':>7} | {'AUROC':>6} {'AP':>7} {'F1-max':>7}"
    rule = "-" * len(head2)
    lines = [head1, head2, rule]

    def row(name: str, get: Any) -> str:
        p = [_pct(get(k)) for k in PIXEL_KEYS]
        i = [_pct(get(k)) for k in IMAGE_KEYS]
        return f"{name:<{w}} | {p[0]:>6} {p[1]:>7} {p[2]:>7} | {i[0]:>6} {i[1]:>7} {i[2]:>7}"

    for name, m in zip(names, per_category.values()):
        lines.append(row(name, lambda k, m=m: getattr(m, k)))
    lines.append(rule)
    lines.append(row("mean", mean.get))
    if marked:
        lines.append("* held out of training (zero-shot); other categories were trained on")
    return "\n".join(lines)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None  # JSON has no NaN; null with the documented meaning "undefined"
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def write_metrics(out_dir: Path, result: EvalResult, context: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        **context,
        "per_category": {k: m.as_dict() for k, m in result.per_category.items()},
        "mean": result.mean,
        "threshold": None if result.threshold is None else {"value": result.threshold[0], "method": result.threshold[1]},
        "fgsm": result.fgsm,
        "pgd": result.pgd,
        "heatmaps": [p.name for p in result.heatmaps],
    }
    jpath = out_dir / "metrics.json"
    jpath.write_text(json.dumps(_json_safe(doc), indent=2) + "\n", encoding="utf-8")
    cpath = out_dir / "metrics.csv"
    cols = ["category", "n_images", "n_anomalous", *PIXEL_KEYS, *IMAGE_KEYS, "f1_threshold"]
    with cpath.open("w", newline="", encoding="utf-8") as fh:
        wr = csv.writer(fh)
        wr.writerow(cols)
        for name, m in result.per_category.items():
            d = m.as_dict()
            wr.writerow([name, *(_cell(d[c]) for c in cols[1:])])
        n_img = sum(m.n_images for m in result.per_category.values())
        n_anom = sum(m.n_anomalous for m in result.per_category.values())
        wr.writerow(["mean", n_img, n_anom, *(_cell(result.mean[c]) for c in (*PIXEL_KEYS, *IMAGE_KEYS)), ""])
    return jpath, cpath


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6f}"
    return str(v)


def write_threshold(run_dir: Path, value: float, method: str) -> Path:
    from train.run_state import THRESHOLD_FILE

    p = Path(run_dir) / THRESHOLD_FILE
    p.write_text(json.dumps({"value": float(value), "method": method}, indent=2) + "\n", encoding="utf-8")
    return p


def save_heatmaps(out_dir: Path, dataset: AnomalyDataset, pred: Predictions, indices: Sequence[int]) -> list[Path]:
    from train.heatmaps import heatmap_panel, save_rgb_png

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):  # stale overlays from an earlier eval would mislead
        old.unlink()
    paths = []
    for i in indices:
        s = dataset.samples[i]
        caption = f"{s.category}/{s.defect}/{s.image_path.name}  score {pred.scores[i]:.3f}"
        panel = heatmap_panel(dataset.image_uint8(i), pred.maps[i], pred.masks[i] if s.pixel_gt else None, caption)
        p = out_dir / f"{i:04d}_{s.category}_{s.defect}_{s.image_path.stem}.png"
        save_rgb_png(p, panel)
        paths.append(p)
    return paths


# ------------------------------------------------------------------ the whole eval


def evaluate(
    model: Any,
    samples: Sequence[Sample],
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    options: EvalOptions = EvalOptions(),
    heatmap_dir: Path | None = None,
    data_name: str = "",
    progress: bool = True,
) -> EvalResult:
    """Run the model over `samples` and compute everything eval reports."""
    dataset = AnomalyDataset(samples, image_size, mean, std)
    pred = predict(model, dataset, options, progress)
    per_cat = metrics_by_category(samples, pred, options.fpr_limit)
    result = EvalResult(per_cat, mean_metrics(per_cat), None)
    best, thr = f1_max_margin_threshold(pred.labels, pred.scores)
    cats = ",".join(per_cat)
    if math.isnan(best):
        log.warning("no threshold: the eval images hold only one class")
    else:
        result.threshold = (thr, f"F1-max of image scores (score >= threshold is anomalous; F1 {best:.4f}), "
                                 f"midpoint to the next lower score, on eval set {data_name} "
                                 f"categories {cats} ({len(samples)} images)")
    if options.fgsm_eps is not None:
        adv = fgsm_scores(model, dataset, options.fgsm_eps, options, progress)
        per = {}
        for cat in per_cat:
            idx = np.array([i for i, s in enumerate(samples) if s.category == cat])
            per[cat] = {"clean": auroc(pred.labels[idx], pred.scores[idx]), "perturbed": auroc(pred.labels[idx], adv[idx])}
        result.fgsm = {
            "eps": options.fgsm_eps,
            "loss": "BCE of image score vs label; pixel space [0,1], clipped, float (not re-quantised)",
            # Mean over categories, like the table's image AUROC; pooled over all images too.
            "clean_image_auroc": _nanmean([v["clean"] for v in per.values()]),
            "perturbed_image_auroc": _nanmean([v["perturbed"] for v in per.values()]),
            "pooled_clean_image_auroc": auroc(pred.labels, pred.scores),
            "pooled_perturbed_image_auroc": auroc(pred.labels, adv),
            "mean_score_shift": float(np.mean(np.abs(adv - pred.scores))),
            "per_category": per,
        }
    if options.pgd_steps is not None:
        result.pgd = _pgd_report(model, dataset, samples, pred, options, progress)
    if heatmap_dir is not None and options.heatmaps:
        result.heatmaps = save_heatmaps(heatmap_dir, dataset, pred, pick_heatmap_indices(samples, options.heatmaps))
    return result


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from edge_runtime.errors import BackendUnavailable

        raise BackendUnavailable("--device cuda asked for, but torch sees no CUDA GPU")
    return name


def evaluate_run(
    run_dir: str | Path,
    data: str | Path,
    categories: Sequence[str] | None = None,
    epoch: int | None = None,
    options: EvalOptions = EvalOptions(),
    splits: Sequence[str] = ("test",),
    write_threshold_file: bool = True,
    progress: bool = True,
) -> tuple[EvalResult, str]:
    """Load RUN's adapters (H1's `load_run_model`), evaluate on `data`, write RUN/eval/* and
    RUN/threshold.json. Returns (result, printable table)."""
    from train.data import load_samples
    from train.run_state import load_run_model

    run = Path(run_dir)
    samples = load_samples(data, splits=splits, categories=categories)
    model, info = load_run_model(run, epoch, device=options.device)
    log.info("eval: run %s epoch %d on %s (%d images), device %s, fp32", run, info.epoch, data, len(samples), options.device)
    out_dir = run / "eval"
    result = evaluate(model, samples, info.image_size, info.mean, info.std, options,
                      heatmap_dir=out_dir / "heatmaps", data_name=str(Path(data).resolve()), progress=progress)
    table = format_table(result.per_category, result.mean, info.config.data.holdout)
    context = {
        "run": str(run), "epoch": info.epoch, "data": str(data), "splits": list(splits),
        "categories": list(result.per_category), "n_images": len(samples),
        "image_size": list(info.image_size),
        "sigma": default_sigma(info.image_size) if options.sigma is None else options.sigma,
        "fpr_limit": options.fpr_limit, "holdout": list(info.config.data.holdout),
    }
    write_metrics(out_dir, result, context)
    if result.threshold is not None and write_threshold_file:
        p = write_threshold(run, *result.threshold)
        log.info("wrote %s: %.4f (%s)", p, *result.threshold)
    return result, table
