"""Evaluation of a trained run: per-category metrics in the AnomalyCLIP paper layout, heatmap
overlays, the F1-max threshold for the bundle, and an optional FGSM robustness check.

Splits (train/splits.py, the same plan as training): the validation images choose the
threshold (F1-max) and, through training, the epoch; the test images are only reported. Eval
refuses validation/test images whose sha256 is among the run's training images.

Pixel metrics follow the MVTec AD protocol by default: the patch-grid map is upsampled
(bilinear) to each mask's original resolution and blurred there (AnomalyCLIP's sigma 4 at
518 px, scaled to the model size and then to the image), so images of any size and aspect
count pixel for pixel. `pixel_resolution="model"` compares at the model's input size instead
(masks resized nearest-neighbour), the cheaper variant some papers report.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
    """How to evaluate: batch size, smoothing, pixel-metric resolution, robustness attacks, heatmaps, device."""

    batch_size: int = 8
    sigma: float | None = None  # None: REFERENCE_SIGMA scaled to the model size
    fgsm_eps: float | None = None  # FGSM step in pixel space [0, 1]
    pgd_steps: int | None = None  # also a PGD attack of this many steps within the --fgsm budget
    heatmaps: int = 8
    fpr_limit: float = 0.3
    device: str = "cpu"
    pixel_resolution: str = "original"  # "original" (mask's own size, MVTec protocol) or "model"

    def __post_init__(self) -> None:
        if self.pixel_resolution not in ("original", "model"):
            raise ConfigError(f"pixel resolution must be 'original' or 'model', got {self.pixel_resolution!r}")
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
    """Scores, maps and masks of one evaluated image set, in sample order."""

    scores: np.ndarray  # [N] float64
    maps: np.ndarray  # [N, H, W] float32, upsampled + smoothed
    masks: np.ndarray  # [N, H, W] bool at model size
    labels: np.ndarray  # [N] int
    # Maps/masks at the masks' original sizes (list: sizes differ); None at model resolution.
    pixel_maps: list[np.ndarray] | None = None
    pixel_masks: list[np.ndarray] | None = None


@dataclass
class EvalResult:
    """Per-category and mean metrics, the chosen threshold and what else the eval produced."""

    per_category: dict[str, Metrics]
    mean: dict[str, float | None]
    threshold: tuple[float, str] | None
    fgsm: dict[str, Any] | None = None
    pgd: dict[str, Any] | None = None
    heatmaps: list[Path] = field(default_factory=list)
    threshold_doc: dict[str, Any] | None = None  # what threshold.json holds (lineage, rates)
    mean_holdout: dict[str, float | None] | None = None  # mean over held-out categories only
    scores: np.ndarray | None = None  # image scores of the reported images, in order


def default_sigma(image_size: tuple[int, int]) -> float:
    """AnomalyCLIP's smoothing sigma (4 at 518 px) scaled to `image_size`."""
    return REFERENCE_SIGMA * min(image_size) / REFERENCE_SIZE


# ------------------------------------------------------------------ inference


def _loader(dataset: AnomalyDataset, batch_size: int) -> Any:
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def predict(model: Any, dataset: AnomalyDataset, options: EvalOptions, progress: bool = True) -> Predictions:
    """Scores and image-size maps for every item of `dataset`, in order."""
    import torch
    from tqdm import tqdm

    from train.frame_module import batch_input

    sigma = default_sigma(dataset.image_size) if options.sigma is None else options.sigma
    n = len(dataset)
    h, w = dataset.image_size
    scores = np.zeros(n, np.float64)
    maps = np.zeros((n, h, w), np.float32)
    masks = np.zeros((n, h, w), bool)
    labels = np.zeros(n, np.int64)
    original = options.pixel_resolution == "original"
    pixel_maps: list[Any] = [None] * n
    pixel_masks: list[Any] = [None] * n
    with torch.no_grad():
        text = model.text_embeddings()
        for batch in tqdm(_loader(dataset, options.batch_size), desc="eval", unit="batch", disable=not progress):
            idx = batch["index"].numpy()
            out = model(batch_input(batch).to(options.device), text)
            scores[idx] = out.score.float().cpu().numpy()
            grid = out.anomaly_map.float().cpu().numpy()
            for j, i in enumerate(idx):
                maps[i] = upsample_map(grid[j], (h, w), sigma=sigma)
                if original:
                    size = tuple(int(v) for v in batch["orig_hw"][j])
                    pixel_maps[i] = map_at_size(grid[j], size, sigma, (h, w))
                    pixel_masks[i] = original_mask(dataset.samples[i], size)
            masks[idx] = batch["mask"].numpy() > 0.5
            labels[idx] = batch["label"].numpy()
    if original:
        return Predictions(scores, maps, masks, labels, pixel_maps, pixel_masks)
    return Predictions(scores, maps, masks, labels)


def map_at_size(grid: np.ndarray, size_hw: tuple[int, int], sigma: float, model_hw: tuple[int, int]) -> np.ndarray:
    """Patch-grid map -> map at `size_hw` (bilinear), blurred with `sigma` (given in model-size
    pixels) scaled per axis to that size, so the blur covers the same part of the object."""
    import cv2

    out = cv2.resize(grid.astype(np.float32), (int(size_hw[1]), int(size_hw[0])), interpolation=cv2.INTER_LINEAR)
    if sigma > 0:
        sy = sigma * size_hw[0] / model_hw[0]
        sx = sigma * size_hw[1] / model_hw[1]
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sx, sigmaY=sy)
    return out


def original_mask(sample: Sample, size_hw: tuple[int, int]) -> np.ndarray:
    """The sample's mask at its own resolution (all False for a normal image)."""
    from train.data import load_mask

    return load_mask(sample, size_hw)


def fgsm_scores(
    model: Any, dataset: AnomalyDataset, eps: float, options: EvalOptions, progress: bool = True
) -> np.ndarray:
    """Image scores after one FGSM step of size `eps` in pixel space [0, 1]: one PGD step of
    size eps (`pgd_scores`), which is FGSM exactly.

    The attacked loss is the binary cross-entropy of the image score (the number the device
    thresholds) against the true label; each pixel moves by eps * sign(d loss / d pixel),
    is clipped to [0, 1] and re-normalised with the model's mean/std. The perturbed image is
    kept in float (not re-quantised to uint8), so eps below 1/255 still has an effect.
    """
    return pgd_scores(model, dataset, eps, 1, options, progress, alpha=eps, label=f"fgsm eps={eps:g}")[0]


def pgd_scores(
    model: Any,
    dataset: AnomalyDataset,
    eps: float,
    steps: int,
    options: EvalOptions,
    progress: bool = True,
    alpha: float | None = None,
    label: str = "",
) -> tuple[np.ndarray, float]:
    """Image scores after a `steps`-step PGD attack (train/adversarial.py) on the same loss and
    in the same pixel space as `fgsm_scores`, within an L-inf ball of `eps`; also the mean loss.
    `alpha` is the step size (default 2.5 * eps / steps); `label` names the progress bar."""
    import torch
    from tqdm import tqdm

    from train.adversarial import pgd, score_loss

    out_scores = np.zeros(len(dataset), np.float64)
    total = 0.0
    with torch.no_grad():
        text = model.text_embeddings()
    desc = label or f"pgd eps={eps:g} x{steps}"
    for batch in tqdm(_loader(dataset, options.batch_size), desc=desc, unit="batch", disable=not progress):
        idx = batch["index"].numpy()
        labels = batch["label"].to(options.device)
        x_adv = pgd(
            model, batch["pixel_values"].to(options.device), labels, text, dataset.mean, dataset.std, eps, steps, alpha
        )
        with torch.no_grad():
            score = model(x_adv, text).score
            out_scores[idx] = score.float().cpu().numpy()
            total += float(score_loss(score, labels)) * len(idx)
    return out_scores, total / len(dataset)


def _attack_report(samples: Sequence[Sample], pred: Predictions, adv: np.ndarray) -> dict[str, Any]:
    """Clean vs perturbed image AUROC per category, their means (as the table's image AUROC),
    pooled over all images, and the mean score shift: what FGSM and PGD both report."""
    per = {}
    for cat in sorted({s.category for s in samples}):
        idx = np.array([i for i, s in enumerate(samples) if s.category == cat])
        per[cat] = {"clean": auroc(pred.labels[idx], pred.scores[idx]), "perturbed": auroc(pred.labels[idx], adv[idx])}
    return {
        "clean_image_auroc": _nanmean([v["clean"] for v in per.values()]),
        "perturbed_image_auroc": _nanmean([v["perturbed"] for v in per.values()]),
        "pooled_perturbed_image_auroc": auroc(pred.labels, adv),
        "mean_score_shift": float(np.mean(np.abs(adv - pred.scores))),
        "per_category": per,
    }


# ------------------------------------------------------------------ metrics


def _pgd_report(
    model: Any,
    dataset: AnomalyDataset,
    samples: Sequence[Sample],
    pred: Predictions,
    options: EvalOptions,
    progress: bool,
) -> dict[str, Any]:
    eps, steps = float(options.fgsm_eps), int(options.pgd_steps)
    adv, loss = pgd_scores(model, dataset, eps, steps, options, progress)
    report = _attack_report(samples, pred, adv)
    return {
        "eps": eps,
        "steps": steps,
        "step_size": 2.5 * eps / steps,
        "loss": "BCE of image score vs label; L-inf ball in pixel space [0,1], clipped, float; no random start",
        "clean_image_auroc": report["clean_image_auroc"],
        "perturbed_image_auroc": report["perturbed_image_auroc"],
        "pooled_perturbed_image_auroc": report["pooled_perturbed_image_auroc"],
        "mean_attack_loss": loss,
        "mean_score_shift": report["mean_score_shift"],
        "per_category": report["per_category"],
    }


def _fgsm_report(
    model: Any,
    dataset: AnomalyDataset,
    samples: Sequence[Sample],
    pred: Predictions,
    options: EvalOptions,
    progress: bool,
) -> dict[str, Any]:
    adv = fgsm_scores(model, dataset, options.fgsm_eps, options, progress)
    report = _attack_report(samples, pred, adv)
    return {
        "eps": options.fgsm_eps,
        "loss": "BCE of image score vs label; pixel space [0,1], clipped, float (not re-quantised)",
        # Mean over categories, like the table's image AUROC; pooled over all images too.
        "clean_image_auroc": report["clean_image_auroc"],
        "perturbed_image_auroc": report["perturbed_image_auroc"],
        "pooled_clean_image_auroc": auroc(pred.labels, pred.scores),
        "pooled_perturbed_image_auroc": report["pooled_perturbed_image_auroc"],
        "mean_score_shift": report["mean_score_shift"],
        "per_category": report["per_category"],
    }


def metrics_by_category(samples: Sequence[Sample], pred: Predictions, fpr_limit: float = 0.3) -> dict[str, Metrics]:
    """Metrics per category; pixel metrics over the images with pixel truth (None if none)."""
    cats = sorted({s.category for s in samples})
    out: dict[str, Metrics] = {}
    for cat in cats:
        idx = np.array([i for i, s in enumerate(samples) if s.category == cat])
        pix = np.array([i for i in idx if samples[i].pixel_gt], dtype=np.int64)
        if pred.pixel_maps is not None and pix.size:
            masks, maps = [pred.pixel_masks[i] for i in pix], [pred.pixel_maps[i] for i in pix]
        else:
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
    names = [f"{c}*" if c in marked else c for c in per_category] + ["mean", "mean held-out*"]
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
        held_mean = mean_metrics({c: per_category[c] for c in marked})
        lines.append(row("mean held-out*", held_mean.get))
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
    """`out_dir`/metrics.json (context, per-category and mean metrics, threshold, attacks) and metrics.csv; both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        **context,
        "per_category": {k: m.as_dict() for k, m in result.per_category.items()},
        "mean": result.mean,
        "mean_holdout": result.mean_holdout,
        "threshold": result.threshold_doc
        if result.threshold_doc is not None
        else (None if result.threshold is None else {"value": result.threshold[0], "method": result.threshold[1]}),
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


def write_threshold(run_dir: Path, doc: dict[str, Any]) -> Path:
    """RUN/threshold.json: value, method and lineage (see train.run_state)."""
    from train.run_state import THRESHOLD_FILE

    p = Path(run_dir) / THRESHOLD_FILE
    p.write_text(json.dumps(_json_safe(doc), indent=2) + "\n", encoding="utf-8")
    return p


def error_rates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    """(FRR, FAR) of `score >= threshold` is NG: FRR = good parts rejected / good parts (the
    FPR with anomalous as the positive class), FAR = defects accepted / defects (the FNR);
    None when that class is absent."""
    labels = np.asarray(labels)
    ng = np.asarray(scores) >= threshold
    good, bad = labels == 0, labels == 1
    frr = float(ng[good].mean()) if good.any() else None
    far = float((~ng[bad]).mean()) if bad.any() else None
    return frr, far


def frr_threshold_doc(
    samples: Sequence[Sample], scores: np.ndarray, what: str, target_frr: float, confidence: float = 0.95
) -> dict[str, Any] | None:
    """The threshold from the GOOD images of `samples` at `target_frr` (the order-statistic
    rule of `clipinspect enroll`, edge_runtime.thresholds); too few images give the weaker
    bound they certify (recorded, and logged). None without good images."""
    from edge_runtime.digest import hash_files, image_set_sha256
    from edge_runtime.thresholds import frr_threshold

    labels = np.array([s.label for s in samples])
    good = [s for s in samples if s.label == 0]
    if not good:
        return None
    thr = frr_threshold(np.asarray(scores)[labels == 0], target_frr, confidence, best_effort=True)
    if thr.best_effort:
        log.warning(
            "%d good validation images certify only FRR <= %.3g at %g confidence (target %g)",
            thr.n_images,
            thr.frr_bound,
            confidence,
            target_frr,
        )
    _, far = error_rates(labels, scores, thr.value)
    return {
        "value": thr.value,
        "method": f"{thr.describe()}; good images of {what}",
        "images": len(good),
        "data_sha256": image_set_sha256(hash_files(s.image_path for s in good)),
        "frr": thr.frr_bound,
        "far": far,
        "confidence": confidence,
    }


def choose_threshold(samples: Sequence[Sample], scores: np.ndarray, what: str) -> dict[str, Any] | None:
    """The F1-max (margin) threshold on `samples` with the rates it implies there; None when
    they hold one class only (F1 needs defects and good parts)."""
    from edge_runtime.digest import hash_files, image_set_sha256

    labels = np.array([s.label for s in samples])
    best, thr = f1_max_margin_threshold(labels, scores)
    if math.isnan(best):
        return None
    frr, far = error_rates(labels, scores, thr)
    return {
        "value": float(thr),
        "method": f"F1-max of image scores on {what} (score >= threshold is anomalous; F1 {best:.4f}), midpoint to the "
        f"next lower score; {len(samples)} images, FRR {100 * frr:.1f} %, defects accepted (FAR) {100 * far:.1f} %",
        "images": len(samples),
        "data_sha256": image_set_sha256(hash_files(s.image_path for s in samples)),
        "frr": frr,
        "far": far,
        "f1": float(best),
    }


def save_heatmaps(out_dir: Path, dataset: AnomalyDataset, pred: Predictions, indices: Sequence[int]) -> list[Path]:
    """Heatmap panels of images `indices` into `out_dir` (older PNGs there removed); the files written."""
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
    held_out: Sequence[str] = (),
    model_config: Any = None,
) -> EvalResult:
    """Run the model over `samples` and compute everything eval reports (no threshold: that
    comes from the validation images, `choose_threshold`). For a raw-frame run pass its
    `model_config` and the RawFrameModel: images are fed as its camera's frames."""
    dataset = eval_dataset(samples, image_size, mean, std, model_config)
    pred = predict(model, dataset, options, progress)
    per_cat = metrics_by_category(samples, pred, options.fpr_limit)
    result = EvalResult(per_cat, mean_metrics(per_cat), None)
    held = [c for c in per_cat if c in set(held_out)]
    if held:
        result.mean_holdout = mean_metrics({c: per_cat[c] for c in held})
    result.scores = pred.scores
    if options.fgsm_eps is not None:
        result.fgsm = _fgsm_report(model, dataset, samples, pred, options, progress)
    if options.pgd_steps is not None:
        result.pgd = _pgd_report(model, dataset, samples, pred, options, progress)
    if heatmap_dir is not None and options.heatmaps:
        result.heatmaps = save_heatmaps(heatmap_dir, dataset, pred, pick_heatmap_indices(samples, options.heatmaps))
    return result


def eval_dataset(
    samples: Sequence[Sample],
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    model_config: Any = None,
) -> Any:
    """AnomalyDataset, or for a raw-frame run (model_config.frame) the same images as its
    camera's frames (train.frame_module.RawFrameSamples), as training saw them."""
    if model_config is None or model_config.frame is None:
        return AnomalyDataset(samples, image_size, mean, std)
    from train.frame_module import raw_frame_samples

    return raw_frame_samples(samples, model_config, image_size, mean, std)


def raw_frame_options(options: EvalOptions, model_config: Any) -> EvalOptions:
    """Eval options for a raw-frame run: the map covers the frame's ROI, not the whole image,
    so pixel metrics are taken at the model size on masks mapped through the same ROI/resize;
    the FGSM/PGD attacks perturb model-size RGB images and are refused."""
    if model_config.frame is None:
        return options
    if options.fgsm_eps is not None:
        raise ConfigError(
            "--fgsm/--pgd-steps perturb model-size RGB images; this run trains on raw camera frames "
            f"({model_config.input_format} {model_config.input_size})"
        )
    if options.pixel_resolution == "original":
        log.info("raw-frame run: pixel metrics at the model size, on masks mapped through the frame's ROI")
    return replace(options, pixel_resolution="model")


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def resolve_device(name: str) -> str:
    """ "cuda" or "cpu" for --device `name` ("auto" picks CUDA when available); BackendUnavailable for a missing GPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from edge_runtime.errors import BackendUnavailable

        raise BackendUnavailable("--device cuda asked for, but torch sees no CUDA GPU")
    return name


def eval_roles(
    run: Path, config: Any, data: str | Path, categories: Sequence[str] | None, unseen: bool
) -> dict[str, list[Sample]]:
    """{"val": [...], "test": [...]} for `data`: the training run's split plan, or with
    `unseen` (a data set the run never saw) every test-split image as a test image."""
    from train.data import SPLITS, load_samples
    from train.splits import plan_splits

    if unseen:
        # the data set's own test split (and rows without a split), as the zero-shot protocol reports
        return {"val": [], "test": load_samples(data, splits=("test",), categories=categories, unsplit="test")}
    samples = load_samples(data, splits=SPLITS, categories=categories, unsplit=config.data.unsplit)
    plan = plan_splits(samples, config.data, config.optim.seed)
    return {"val": plan.role("val"), "test": plan.role("test")}


def check_not_trained_on(run: Path, roles: dict[str, list[Sample]]) -> None:
    """Refuse evaluation images whose sha256 is among the run's training images."""
    from edge_runtime.errors import DataError
    from train.data_manifest import RUN_MANIFEST, image_hashes, read_manifest

    path = run / RUN_MANIFEST
    if not path.is_file():
        log.warning(
            "run %s has no %s (made before data manifests): cannot check that eval images were not trained on",
            run,
            RUN_MANIFEST,
        )
        return
    trained = {f["sha256"] for f in read_manifest(path)["files"] if f.get("role") == "train"}
    for role, samples in roles.items():
        hashes = image_hashes(samples)
        seen = [s for s in samples if hashes[s.image_path] in trained]
        if seen:
            raise DataError(
                f"{len(seen)} {role} images were used to train run {run} (e.g. {seen[0].image_path}); "
                "evaluate on images the run did not see"
            )


def evaluate_run(
    run_dir: str | Path,
    data: str | Path,
    categories: Sequence[str] | None = None,
    epoch: int | None = None,
    options: EvalOptions = EvalOptions(),
    report: str = "test",
    write_threshold_file: bool = True,
    progress: bool = True,
    unseen: bool = False,
    target_frr: float | None = None,
) -> tuple[EvalResult, str]:
    """Evaluate RUN (best validated epoch by default) on `data` with the run's split plan:
    the threshold from the validation images, the table from the `report` images ("test",
    or "val" to inspect validation). The threshold is the F1-max on val, or with `target_frr`
    the order-statistic FRR threshold of val's good images. Writes RUN/eval/* and
    RUN/threshold.json (with lineage).
    Returns (result, printable table)."""
    run = Path(run_dir)
    config, ep, roles = _eval_inputs(run, data, categories, epoch, report, unseen)
    options = raw_frame_options(options, config.model)
    model, info = _load_eval_model(run, ep, config, options.device)
    log.info(
        "eval: run %s epoch %d on %s: %d val, %d test images, device %s, fp32",
        run,
        info.epoch,
        data,
        len(roles["val"]),
        len(roles["test"]),
        options.device,
    )
    out_dir = run / "eval"
    doc = _val_threshold(model, roles["val"], info, config.model, options, data, target_frr, progress)
    reported = roles[report]
    result = evaluate(
        model,
        reported,
        info.image_size,
        info.mean,
        info.std,
        options,
        heatmap_dir=out_dir / "heatmaps",
        data_name=str(Path(data).resolve()),
        progress=progress,
        held_out=info.config.data.holdout,
        model_config=config.model,
    )
    if doc is not None:
        _add_lineage(doc, run, info.epoch, reported, result.scores, report)
        result.threshold, result.threshold_doc = (doc["value"], doc["method"]), doc
    table = format_table(result.per_category, result.mean, info.config.data.holdout)
    write_metrics(out_dir, result, _eval_context(run, data, report, unseen, roles, result, info, options))
    if doc is not None and write_threshold_file:
        p = write_threshold(run, doc)
        log.info("wrote %s: %.4f (%s)", p, doc["value"], doc["method"])
    return result, table


def _load_eval_model(run: Path, epoch: int, config: Any, device: str) -> tuple[Any, Any]:
    """(model, run info) of `run` at `epoch` on `device`, wrapped to take camera frames for a raw-frame run."""
    from train.frame_module import raw_frame_model
    from train.run_state import load_run_model

    model, info = load_run_model(run, epoch, device=device)
    return raw_frame_model(model, config.model, info.image_size, info.mean, info.std), info


def _eval_context(
    run: Path,
    data: str | Path,
    report: str,
    unseen: bool,
    roles: dict[str, list[Sample]],
    result: EvalResult,
    info: Any,
    options: EvalOptions,
) -> dict[str, Any]:
    """What metrics.json records about how the evaluation was run (run, data, images, settings)."""
    return {
        "run": str(run),
        "epoch": info.epoch,
        "data": str(data),
        "report": report,
        "unseen": unseen,
        "roles": {r: len(v) for r, v in roles.items()},
        "categories": list(result.per_category),
        "n_images": len(roles[report]),
        "image_size": list(info.image_size),
        "pixel_resolution": options.pixel_resolution,
        "sigma": default_sigma(info.image_size) if options.sigma is None else options.sigma,
        "fpr_limit": options.fpr_limit,
        "holdout": list(info.config.data.holdout),
    }


def _eval_inputs(
    run: Path, data: str | Path, categories: Sequence[str] | None, epoch: int | None, report: str, unseen: bool
) -> tuple[Any, int, dict[str, list[Sample]]]:
    """(run config, epoch, {"val", "test"} images) for evaluating `run` on `data`; DataError for a
    missing run or data folder, no `report` images, or images the run was trained on."""
    from edge_runtime.errors import DataError
    from train.run_state import default_epoch, read_run_config

    if not run.is_dir():
        raise DataError(f"run folder not found: {run}")
    if not Path(data).exists():
        raise DataError(f"data not found: {data}")
    config = read_run_config(run)
    ep = default_epoch(run, epoch)
    roles = eval_roles(run, config, data, categories, unseen)
    if not roles[report]:
        raise DataError(
            f"no {report} images in {data} for run {run} (split plan: val {len(roles['val'])}, "
            f"test {len(roles['test'])})"
        )
    check_not_trained_on(run, roles)
    return config, ep, roles


def _val_threshold(
    model: Any,
    val: list[Sample],
    info: Any,
    model_config: Any,
    options: EvalOptions,
    data: str | Path,
    target_frr: float | None,
    progress: bool,
) -> dict[str, Any] | None:
    """The threshold document chosen on the validation images (F1-max, or the FRR target's
    order statistic); None, with a warning saying why, when they cannot choose one."""
    doc = None
    if val:
        val_pred = predict(
            model,
            eval_dataset(val, info.image_size, info.mean, info.std, model_config),
            replace(options, pixel_resolution="model"),
            progress,
        )
        what = f"the validation split of {Path(data).resolve()}"
        doc = (
            choose_threshold(val, val_pred.scores, what)
            if target_frr is None
            else frr_threshold_doc(val, val_pred.scores, what, target_frr)
        )
    if doc is None:
        log.warning(
            "no threshold: %s",
            "the validation images hold one class only (F1 needs both); pass --target-frr "
            "to set it from the good ones, or use 'clipinspect enroll'"
            if val
            else "no validation images (eval --unseen, or every category held out)",
        )
    return doc


def _add_lineage(
    doc: dict[str, Any], run: Path, epoch: int, reported: list[Sample], scores: np.ndarray, report: str
) -> None:
    """Record in `doc` where the threshold came from (run, epoch, training data) and, for
    information only, its error rates on the reported images."""
    from train.run_state import epoch_sha256, read_run_record

    rec = read_run_record(run)
    frr, far = error_rates(np.array([s.label for s in reported]), scores, doc["value"])
    doc.update(
        {
            "epoch": epoch,
            "epoch_sha256": epoch_sha256(run, epoch),
            "run_id": rec.get("run_id", ""),
            "split": "val",
            "train_data_sha256": (rec.get("data_sha256") or {}).get("train", ""),
            report: {"frr": frr, "far": far, "images": len(reported), "note": "reported only, not used to choose"},
        }
    )
