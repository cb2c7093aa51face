"""eval end-to-end on a tiny run (H1's tiny CLIP + random non-zero LoRA saved the way training
saves it), checked against an independent recomputation; output files; FGSM; CSV data; errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.cli import main
from train.metrics import Metrics


@pytest.fixture(scope="module")
def tiny_run(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder with adapters/epoch_001, synthetic MVTec data: 2 categories, 16 test images)."""
    import torch

    from edge_runtime.config import save_config
    from train.config import LoraSettings, TrainConfig
    from train.model import set_lora_random
    from train.run_state import build_run_model, epoch_dir, save_adapters
    from train.synth import SynthSpec, make_synthetic_dataset

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval_run")
    data = make_synthetic_dataset(
        root / "data", SynthSpec(categories=2, size=64, train_good=0, per_class=4), progress=False
    ).root
    cfg = TrainConfig(clip=str(tiny_clip_dir), lora=LoraSettings(rank=4))
    run = root / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    model, _ = build_run_model(cfg)
    set_lora_random(model, std=0.05, seed=3)
    save_adapters(model, epoch_dir(run, 1))
    return run, data


def _roles(run: Path, data: Path) -> dict[str, list]:
    """The run's split plan of `data`: what eval must report (test) and threshold on (val)."""
    from train.data import SPLITS, load_samples
    from train.run_state import read_run_config
    from train.splits import plan_splits

    cfg = read_run_config(run)
    plan = plan_splits(load_samples(data, splits=SPLITS), cfg.data, cfg.optim.seed)
    return {"val": plan.role("val"), "test": plan.role("test")}


def _independent_scores(run: Path, data: Path, role: str = "test") -> tuple[np.ndarray, np.ndarray, list]:
    """Scores through the device preprocessing path, one image at a time, no eval code."""
    import torch

    from edge_runtime.imageio import read_rgb
    from edge_runtime.preprocess import normalize, prepare
    from train.run_state import load_run_model

    model, info = load_run_model(run)
    samples = _roles(run, data)[role]
    scores = []
    with torch.no_grad():
        for s in samples:
            x = normalize(prepare(read_rgb(s.image_path), info.image_size)[None], info.mean, info.std)
            scores.append(float(model.predict(torch.from_numpy(x)).score[0]))
    return np.array(scores), np.array([s.label for s in samples]), samples


@pytest.mark.slow
def test_eval_end_to_end(tiny_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    run, data = tiny_run
    assert main(["eval", "--run", str(run), "--data", str(data), "--heatmaps", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "pixel-level" in out and "image-level" in out and "AUPRO" in out and "F1-max" in out
    table_rows = [ln.split("|")[0].strip() for ln in out.splitlines() if "|" in ln]
    assert table_rows[2:] == ["metal", "wood", "mean"]

    doc = json.loads((run / "eval" / "metrics.json").read_text())
    roles = _roles(run, data)
    assert not {s.image_path for s in roles["val"]} & {s.image_path for s in roles["test"]}
    assert doc["epoch"] == 1 and doc["categories"] == ["metal", "wood"] and doc["n_images"] == len(roles["test"]) > 0
    scores, labels, samples = _independent_scores(run, data)
    cats = np.array([s.category for s in samples])
    for cat in ("metal", "wood"):
        row = doc["per_category"][cat]
        sel = cats == cat
        assert row["image_auroc"] == pytest.approx(roc_auc_score(labels[sel], scores[sel]), abs=1e-6)
        assert row["image_ap"] == pytest.approx(average_precision_score(labels[sel], scores[sel]), abs=1e-6)
        for k in ("pixel_auroc", "aupro", "pixel_ap"):
            assert 0.0 <= row[k] <= 1.0
    assert doc["mean"]["image_auroc"] == pytest.approx(
        np.mean([doc["per_category"][c]["image_auroc"] for c in ("metal", "wood")])
    )

    csv_lines = (run / "eval" / "metrics.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("category,n_images,n_anomalous,pixel_auroc,aupro,pixel_ap,image_auroc")
    assert [ln.split(",")[0] for ln in csv_lines[1:]] == ["metal", "wood", "mean"]

    thr = json.loads((run / "threshold.json").read_text())
    scores, labels, _ = _independent_scores(run, data, "val")  # the threshold comes from validation only
    best = max(
        (2 * p * r / (p + r) if p + r else 0.0, t)
        for t in np.unique(scores)
        for p, r in [
            (
                ((scores >= t) & (labels == 1)).sum() / max(1, (scores >= t).sum()),
                ((scores >= t) & (labels == 1)).sum() / labels.sum(),
            )
        ]
    )
    below = scores[scores < best[1]]
    assert thr["value"] == pytest.approx((best[1] + below.max()) / 2 if below.size else best[1], abs=1e-6)
    pred = scores >= thr["value"]
    tp = (pred & (labels == 1)).sum()
    assert 2 * tp / (pred.sum() + labels.sum()) == pytest.approx(best[0])  # the threshold reaches F1-max
    assert "F1-max" in thr["method"] and "validation split" in thr["method"] and thr["epoch"] == 1
    assert thr["images"] == len(roles["val"]) and thr["frr"] == pytest.approx(
        ((scores >= thr["value"]) & (labels == 0)).sum() / (labels == 0).sum()
    )
    from train.run_state import read_threshold_doc, threshold_value

    assert threshold_value(read_threshold_doc(run)) == (thr["value"], thr["method"])  # what merge records

    import cv2

    pngs = sorted((run / "eval" / "heatmaps").glob("*.png"))
    assert len(pngs) == 3 and sorted(doc["heatmaps"]) == [p.name for p in pngs]
    img = cv2.imread(str(pngs[0]))
    assert img is not None and img.shape[0] >= 256 and img.shape[1] >= 512


@pytest.mark.slow
def test_fgsm_raises_the_attacked_loss(tiny_run: tuple[Path, Path]) -> None:
    import torch

    from train.data import AnomalyDataset, load_samples
    from train.evaluate import EvalOptions, fgsm_scores, predict
    from train.run_state import load_run_model

    run, data = tiny_run
    model, info = load_run_model(run)
    samples = load_samples(data, splits=("test",), categories=["wood"])
    ds = AnomalyDataset(samples, info.image_size, info.mean, info.std)
    opts = EvalOptions(batch_size=8)
    clean = predict(model, ds, opts, progress=False)
    adv = fgsm_scores(model, ds, 0.03, opts, progress=False)
    y = torch.tensor(clean.labels, dtype=torch.float32)

    def bce(s: np.ndarray) -> float:
        return float(
            torch.nn.functional.binary_cross_entropy(torch.tensor(s, dtype=torch.float32).clamp(1e-6, 1 - 1e-6), y)
        )

    assert bce(adv) > bce(clean.scores)
    # Anomalous scores go down and normal ones up, on average.
    assert adv[clean.labels == 1].mean() < clean.scores[clean.labels == 1].mean()
    assert adv[clean.labels == 0].mean() > clean.scores[clean.labels == 0].mean()


@pytest.mark.slow
def test_eval_fgsm_and_csv_image_level(
    tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data = tiny_run
    rows = ["image_id,label,description"]
    for p in sorted((data / "wood" / "test").rglob("*.png")):
        rows.append(f"{p.relative_to(data)},{'good' if p.parent.name == 'good' else 'ng'},")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    try:
        argv = [
            "eval",
            "--run",
            str(run),
            "--data",
            str(data / "labels.csv"),
            "--heatmaps",
            "1",
            "--fgsm",
            "0.02",
            "--no-threshold",
            "--device",
            "cpu",
        ]
        assert main(argv) == 2  # no split column: the rows' role must be said
        assert "have no split" in capsys.readouterr().err
        assert main([*argv, "--unseen"]) == 0
    finally:
        (data / "labels.csv").unlink()
    out = capsys.readouterr().out
    data_row = next(ln for ln in out.splitlines() if ln.startswith("data "))  # CSV category = folder name
    pixel_cells = data_row.split("|")[1].split()
    assert pixel_cells == ["-", "-", "-"]
    assert "FGSM eps=0.02" in out and "perturbed" in out
    doc = json.loads((run / "eval" / "metrics.json").read_text())
    assert doc["per_category"]["data"]["pixel_auroc"] is None and doc["mean"]["aupro"] is None
    f = doc["fgsm"]
    assert f["eps"] == 0.02 and 0 <= f["perturbed_image_auroc"] <= 1 and f["mean_score_shift"] > 0


def test_eval_bad_inputs(tmp_path: Path, mvtec_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def err(argv: list[str]) -> str:
        assert main(argv) == 2
        e = capsys.readouterr().err
        lines = [ln for ln in e.splitlines() if "error:" in ln]
        assert len(lines) == 1 and "Traceback" not in e
        return lines[0]

    assert "run folder not found" in err(["eval", "--run", str(tmp_path / "norun"), "--data", str(mvtec_root)])
    assert "data not found" in err(["eval", "--run", str(tmp_path), "--data", str(tmp_path / "nodata")])
    (tmp_path / "config.yaml").write_text("clip: x\n")
    assert "no saved adapters" in err(["eval", "--run", str(tmp_path), "--data", str(mvtec_root)])
    assert "--fgsm must be in (0, 1]" in err(["eval", "--run", str(tmp_path), "--data", str(mvtec_root), "--fgsm", "3"])


def test_table_layout_dash_and_nan() -> None:
    from train.evaluate import format_table
    from train.metrics import mean_metrics

    a = Metrics(4, 2, 0.9, 0.8, 0.75, 0.5, 0.95, 0.85, 0.4)
    b = Metrics(3, 0, math.nan, math.nan, math.nan, math.nan, None, None, None)
    table = format_table({"alpha": a, "beta": b}, mean_metrics({"alpha": a, "beta": b}))
    lines = table.splitlines()
    assert "pixel-level" in lines[0] and lines[0].index("pixel-level") < lines[0].index("image-level")
    alpha = lines[3].split("|")
    assert alpha[1].split() == ["95.0", "85.0", "40.0"] and alpha[2].split() == ["90.0", "80.0", "75.0"]
    beta = lines[4].split("|")
    assert beta[1].split() == ["-", "-", "-"] and beta[2].split() == ["n/a", "n/a", "n/a"]
    mean = lines[-1].split("|")
    assert mean[1].split() == ["95.0", "85.0", "40.0"] and mean[2].split() == ["90.0", "80.0", "75.0"]


def test_heatmap_pick_covers_categories_and_defects() -> None:
    from train.data import Sample
    from train.evaluate import pick_heatmap_indices

    samples = [
        Sample(Path(f"{c}{d}{i}.png"), int(d != "good"), None, c, d)
        for c in ("a", "b")
        for d in ("good", "crack", "scratch")
        for i in range(3)
    ]
    picked = pick_heatmap_indices(samples, 4)
    assert [(samples[i].category, samples[i].defect) for i in picked] == [
        ("a", "crack"),
        ("b", "crack"),
        ("a", "scratch"),
        ("b", "scratch"),
    ]
    assert len(pick_heatmap_indices(samples, 100)) == len(samples) and pick_heatmap_indices(samples, 0) == []


def test_overlay_draws_map_and_mask_contour() -> None:
    from train.heatmaps import colorize, heatmap_panel, overlay

    img = np.full((32, 32, 3), 128, np.uint8)
    amap = np.zeros((32, 32), np.float32)
    amap[8:16, 8:16] = 1.0
    mask = np.zeros((32, 32), bool)
    mask[20:28, 20:28] = True
    out = overlay(img, amap, mask)
    assert out[12, 12, 0] > out[12, 12, 2]  # hot = red in jet
    assert out[2, 2, 2] > out[2, 2, 0]  # cold = blue
    assert (out[20, 20:28] == 255).all()  # contour on the mask border
    np.testing.assert_array_equal(colorize(np.array([[0.0, 1.0]]))[0, 0], [0, 0, 128])
    panel = heatmap_panel(img, amap, mask, caption="x")
    assert panel.shape == (24 + 256, 512, 3)


def test_table_marks_held_out_categories() -> None:
    from train.evaluate import format_table
    from train.metrics import mean_metrics

    a = Metrics(4, 2, 0.9, 0.8, 0.75, 0.5)
    rows = {"alpha": a, "beta": a}
    table = format_table(rows, mean_metrics(rows), held_out=("beta", "gamma"))
    names = [ln.split("|")[0].strip() for ln in table.splitlines()[3:5]]
    assert names == ["alpha", "beta*"] and table.splitlines()[-1].startswith("* held out of training")
    assert "*" not in format_table(rows, mean_metrics(rows))
