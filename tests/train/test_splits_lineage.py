"""Honest splits and threshold lineage: validation never overlaps test or train, eval refuses
images the run trained on, merge refuses a threshold from another epoch or run, the held-out
mean row, pixel metrics at the mask's original resolution, and the data-integrity manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.errors import ConfigError, DataError
from tests.train.helpers import train_argv
from train.config import DataConfig
from train.data import SPLITS, Sample, load_samples
from train.splits import plan_splits
from train.synth import SynthSpec, make_synthetic_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("splits") / "data"
    make_synthetic_dataset(out, SynthSpec(seed=0, categories=3, size=64, train_good=6, per_class=4), progress=False)
    return out


def _ids(samples: list[Sample]) -> set[tuple[str, str, str]]:
    return {(s.category, s.split, s.image_path.relative_to(s.image_path.parents[2]).as_posix()) for s in samples}


@pytest.mark.parametrize(
    "cfg",
    [
        DataConfig(),
        DataConfig(holdout=("metal",)),
        DataConfig(splits=("train",)),
        DataConfig(val_fraction=0.5, test_fraction=0.3),
        DataConfig(splits=("test",), test_fraction=0.0, holdout=("wood",)),
        DataConfig(categories=("fabric",)),
    ],
)
def test_roles_are_disjoint_cover_the_data_and_do_not_depend_on_the_folder(synth, tmp_path, cfg):
    samples = load_samples(synth, splits=SPLITS)
    plan = plan_splits(samples, cfg, seed=7)
    train, val, test = (_ids(plan.role(r)) for r in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert val, "a validation split is always carved"
    for s in plan.role("test"):
        assert s.split == "test"  # reported images are the data set's own test images
    unseen = set(cfg.holdout) | ({s.category for s in samples} - set(cfg.categories) if cfg.categories else set())
    for cat in unseen:
        assert not any(s.category == cat for s in [*plan.train, *plan.val])
        assert {s.image_path for s in plan.test if s.category == cat} == {
            s.image_path for s in samples if s.category == cat and s.split == "test"
        }
    if "train" in cfg.splits and not unseen:  # nothing is lost: every used image has one role
        used = [s for s in samples if s.split == "train" or "test" in cfg.splits or s.split == "test"]
        assert len(train | val | test) == len(used)
    moved = shutil.copytree(synth, tmp_path / "elsewhere")
    again = plan_splits(load_samples(moved, splits=SPLITS), cfg, seed=7)
    assert [_ids(again.role(r)) for r in ("train", "val", "test")] == [train, val, test]
    other = plan_splits(samples, cfg, seed=8)
    assert _ids(other.role("val")) != val  # the seed draws


def test_real_mvtec_bottle_plan(mvtec_root):
    plan = plan_splits(load_samples(mvtec_root, splits=SPLITS), DataConfig(), seed=0)
    paths = [{s.image_path for s in plan.role(r)} for r in ("train", "val", "test")]
    assert not paths[0] & paths[1] and not paths[0] & paths[2] and not paths[1] & paths[2]
    assert {s.label for s in plan.val} == {0, 1}  # validation sees defects, so F1 can choose a threshold
    assert len(plan.test) == 17 and sum(map(len, paths)) == 30 + 34


def test_csv_split_column_and_seeded_unsplit(tmp_path):
    import cv2

    rows = ["image_id,label,description,split"]
    for i in range(12):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((16, 16, 3), i * 10, np.uint8))
        rows.append(f"{i}.png,{'good' if i % 2 else 'ng'},,{['train', 'validation', 'test'][i % 3]}")
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    plan = plan_splits(load_samples(tmp_path / "l.csv", splits=SPLITS), DataConfig(), seed=0)
    assert {s.image_path.name for s in plan.val} == {f"{i}.png" for i in range(1, 12, 3)}  # the file's own val rows
    (tmp_path / "l.csv").write_text("\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    with pytest.raises(Exception, match="12 rows have no split"):
        load_samples(tmp_path / "l.csv", splits=SPLITS)
    plan = plan_splits(
        load_samples(tmp_path / "l.csv", splits=SPLITS, unsplit="seeded"), DataConfig(unsplit="seeded"), seed=0
    )
    assert plan.train and plan.val and plan.test
    assert not ({s.image_path for s in plan.train} & {s.image_path for s in plan.test})


def test_bad_split_config_is_config_error():
    with pytest.raises(ConfigError, match="val_fraction"):
        DataConfig(val_fraction=1.0)
    with pytest.raises(ConfigError, match="validation images are never trained on"):
        DataConfig(splits=("train", "val"))


# ------------------------------------------------------------------ a real tiny training run


@pytest.fixture(scope="module")
def run2(synth, tiny_clip_dir, tmp_path_factory) -> Path:
    pytest.importorskip("peft")
    run = tmp_path_factory.mktemp("lineage") / "run"
    extra = ("--epochs", "2", "--holdout", "wood", "--no-progress")
    sets = ("--set", "optim.threads=1", "--set", "optim.batch_size=8", "--set", "data.max_images=8")
    assert main(train_argv(synth, tiny_clip_dir, run, *extra, *sets, quick=False)) == 0
    return run


def test_run_records_roles_and_validation_per_epoch(run2, synth):
    from train.data_manifest import read_manifest

    doc = read_manifest(run2 / "data_manifest.json")
    by_role: dict[str, set[str]] = {}
    for f in doc["files"]:
        by_role.setdefault(f["role"], set()).add(f["sha256"])
    assert not by_role["train"] & by_role["val"] and not by_role["train"] & by_role["test"]
    assert not by_role["val"] & by_role["test"]
    record = json.loads((run2 / "run.json").read_text())
    assert record["data_sha256"]["val"] == doc["roles"]["val"]["sha256"] and len(record["run_id"]) == 32
    rows = [json.loads(x) for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert all(r["val_images"] == len(by_role["val"]) and r["val_criterion"] == "image_auroc" for r in rows)


@pytest.mark.slow
def test_eval_threshold_lineage_and_merge_refusals(run2, synth, tmp_path, capsys):
    from train.run_state import epoch_sha256

    assert (
        main(["eval", "--run", str(run2), "--data", str(synth), "--epoch", "1", "--heatmaps", "0", "--device", "cpu"])
        == 0
    )
    out = capsys.readouterr().out
    assert "mean held-out*" in out and "reported only" in out
    thr = json.loads((run2 / "threshold.json").read_text())
    assert thr["epoch"] == 1 and thr["split"] == "val" and thr["epoch_sha256"] == epoch_sha256(run2, 1)
    assert thr["run_id"] == json.loads((run2 / "run.json").read_text())["run_id"]
    val_manifest = json.loads((run2 / "data_manifest.json").read_text())
    assert thr["data_sha256"] == val_manifest["roles"]["val"]["sha256"] and 0 <= thr["frr"] <= 1
    metrics = json.loads((run2 / "eval" / "metrics.json").read_text())
    assert metrics["mean_holdout"]["image_auroc"] == metrics["per_category"]["wood"]["image_auroc"]

    # a threshold chosen for epoch 1 cannot ship with epoch 2's weights
    assert main(["merge", "--run", str(run2), "--out", str(tmp_path / "m"), "--epoch", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "was chosen for epoch 1, not epoch 2" in err
    # nor with another run's weights (same epoch number)
    other = shutil.copytree(run2, tmp_path / "other")
    record = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**record, "run_id": "f" * 32}))
    assert main(["merge", "--run", str(other), "--out", str(tmp_path / "m")]) == 2
    assert "belongs to run" in capsys.readouterr().err
    # the right epoch merges, and the lineage reaches the bundle manifest through export
    assert main(["merge", "--run", str(run2), "--out", str(tmp_path / "m1")]) == 0
    from train.merged import read_merged_info

    info = read_merged_info(tmp_path / "m1")
    assert info.epoch == 1 and info.threshold_lineage["data_sha256"] == thr["data_sha256"]
    assert info.lineage["data_sha256"]["train"] == record["data_sha256"]["train"]
    assert not (tmp_path / "m").exists()
    pytest.importorskip("onnxscript")
    from edge_runtime.bundle import load_bundle

    assert main(["export", "--merged", str(tmp_path / "m1"), "--out", str(tmp_path / "b")]) == 0
    manifest = load_bundle(tmp_path / "b").manifest
    assert (manifest.threshold.value, manifest.threshold.epoch) == (pytest.approx(thr["value"]), 1)
    assert manifest.threshold.data_sha256 == thr["data_sha256"] and manifest.threshold.frr == pytest.approx(thr["frr"])
    assert manifest.lineage["training"]["run_id"] == record["run_id"]
    assert manifest.lineage["training"]["data_sha256"]["train"] == record["data_sha256"]["train"]


@pytest.mark.slow
def test_eval_refuses_images_the_run_trained_on(run2, synth, tmp_path, capsys):
    data = shutil.copytree(synth, tmp_path / "data")
    manifest = json.loads((run2 / "data_manifest.json").read_text())
    trained = next(f for f in manifest["files"] if f["role"] == "train" and f["category"] == "metal")
    victim = next((data / "wood" / "test" / "good").glob("*.png"))  # held out: always a test image
    shutil.copyfile(Path(manifest["data"]) / trained["path"], victim)
    assert main(["eval", "--run", str(run2), "--data", str(data), "--heatmaps", "0", "--no-threshold"]) == 2
    assert "test images were used to train run" in capsys.readouterr().err


@pytest.mark.slow
def test_unseen_kolektor_pixel_metrics_original_vs_model_size(run2, kolektor_root, capsys):
    """Real tall, narrow KolektorSDD images (202-209 x 518) with thin cracks: the two pixel
    protocols give different numbers, and the report says which one ran."""
    docs = {}
    for res in ("original", "model"):
        assert (
            main(
                [
                    "eval",
                    "--run",
                    str(run2),
                    "--data",
                    str(kolektor_root),
                    "--unseen",
                    "--heatmaps",
                    "0",
                    "--pixel-resolution",
                    res,
                    "--no-threshold",
                ]
            )
            == 0
        )
        docs[res] = json.loads((run2 / "eval" / "metrics.json").read_text())
    capsys.readouterr()
    a, b = (docs[r]["per_category"]["commutator"] for r in ("original", "model"))
    assert docs["original"]["pixel_resolution"] == "original" and docs["original"]["roles"] == {"val": 0, "test": 35}
    assert a["image_auroc"] == b["image_auroc"]  # image level does not depend on it
    assert abs(a["pixel_auroc"] - b["pixel_auroc"]) > 1e-4


# ------------------------------------------------------------------ metrics protocol


def _bilinear_reference(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (OpenCV's INTER_LINEAR convention), in numpy."""
    gh, gw = grid.shape
    ys = np.clip((np.arange(h) + 0.5) * gh / h - 0.5, 0, gh - 1)
    xs = np.clip((np.arange(w) + 0.5) * gw / w - 0.5, 0, gw - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bot = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def _brute_auroc(mask: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[mask], scores[~mask]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_pixel_metrics_at_original_resolution_match_brute_force_and_differ_from_model_size():
    from train.data import resize_mask
    from train.evaluate import map_at_size
    from train.metrics import aupro, pixel_auroc

    rng = np.random.default_rng(0)
    grid = rng.random((8, 8)).astype(np.float32)
    h, w = 37, 23  # odd and not square, like a cropped line-scan image
    mask = np.zeros((h, w), bool)
    mask[5:14, 3:9] = True
    mask[25:33, 15:21] = True
    full = map_at_size(grid, (h, w), 0.0, (64, 64))
    np.testing.assert_allclose(full, _bilinear_reference(grid, h, w), atol=1e-5)
    ours = pixel_auroc([mask], [full])
    assert ours == pytest.approx(_brute_auroc(mask, _bilinear_reference(grid, h, w)), abs=1e-6)
    # the model-size variant (mask resized nearest-neighbour to 64x64) gives another number
    small_map = map_at_size(grid, (64, 64), 0.0, (64, 64))
    small_mask = resize_mask(mask, (64, 64)) > 0.5
    assert abs(pixel_auroc(small_mask[None], small_map[None]) - ours) > 1e-4
    # images of different sizes mix in one category (lists, not a stacked array)
    other = np.zeros((20, 50), bool)
    other[2:6, 10:30] = True
    both = pixel_auroc([mask, other], [full, map_at_size(grid, (20, 50), 0.0, (64, 64))])
    assert 0 <= both <= 1 and 0 <= aupro([mask, other], [full, map_at_size(grid, (20, 50), 0.0, (64, 64))]) <= 1


def test_blur_sigma_scales_per_axis():
    from train.evaluate import map_at_size

    grid = np.zeros((8, 8), np.float32)
    grid[4, 4] = 1.0
    out = map_at_size(grid, (128, 32), 2.0, (64, 64))  # twice as tall, half as wide as the model input
    assert out.shape == (128, 32)
    col, row = out[:, out.shape[1] // 2 + 1], out[out.shape[0] // 2 + 2, :]
    half_h = (col > col.max() / 2).sum() / 128
    half_w = (row > row.max() / 2).sum() / 32
    assert half_h == pytest.approx(half_w, rel=0.35)  # the same part of the object is smoothed


def test_table_mean_row_over_held_out_categories_only():
    from train.evaluate import format_table
    from train.metrics import Metrics, mean_metrics

    a, b, c = (Metrics(4, 2, v, v, v, 0.5) for v in (0.9, 0.7, 0.5))
    rows = {"alpha": a, "beta": b, "gamma": c}
    lines = format_table(rows, mean_metrics(rows), held_out=("beta", "gamma")).splitlines()
    held = next(ln for ln in lines if ln.startswith("mean held-out*"))
    assert held.split("|")[2].split()[0] == "60.0"  # (70 + 50) / 2, alpha (trained on) excluded
    assert next(ln for ln in lines if ln.startswith("mean ")).split("|")[2].split()[0] == "70.0"


# ------------------------------------------------------------------ data-integrity manifest


def test_check_data_writes_and_verifies_manifest(synth, tmp_path, capsys):
    data = shutil.copytree(synth, tmp_path / "d")
    man = tmp_path / "manifest.json"
    assert main(["check-data", str(data), "--write-manifest", str(man)]) == 0
    doc = json.loads(man.read_text())
    assert doc["images"] == len(load_samples(data, splits=SPLITS)) and any("mask_sha256" in f for f in doc["files"])
    assert main(["check-data", str(data), "--verify-manifest", str(man)]) == 0
    capsys.readouterr()
    mask = next((data / "metal" / "ground_truth").rglob("*.png"))
    original = mask.read_bytes()
    raw = bytearray(original)
    raw[-20] ^= 0xFF
    mask.write_bytes(bytes(raw))
    assert main(["check-data", str(data), "--verify-manifest", str(man)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sha256 differs" in err and mask.name in err
    shutil.copyfile(
        next((data / "metal" / "train" / "good").glob("*.png")), data / "metal" / "train" / "good" / "new.png"
    )
    mask.write_bytes(original)
    assert main(["check-data", str(data), "--splits", "train", "--verify-manifest", str(man)]) == 2
    assert "not in data manifest" in capsys.readouterr().err


def test_training_verifies_the_manifest_before_touching_the_run(synth, tiny_clip_dir, tmp_path, capsys):
    data = shutil.copytree(synth, tmp_path / "d")
    man = tmp_path / "manifest.json"
    assert main(["check-data", str(data), "--write-manifest", str(man)]) == 0
    img = next((data / "wood" / "train" / "good").glob("*.png"))
    img.write_bytes(img.read_bytes() + b"\0")
    run = tmp_path / "run"
    extra = ("--epochs", "1", "--set", f"data.manifest={man}", "--no-progress")
    assert main(train_argv(data, tiny_clip_dir, run, *extra, quick=False)) == 2
    assert "sha256 differs" in capsys.readouterr().err and not run.exists()


def test_best_epoch_is_the_best_validated_saved_epoch(tmp_path):
    from train.run_state import ADAPTER_FILE, HEAD_FILE, best_epoch, default_epoch, epoch_dir

    for e in (1, 2, 3, 4):
        folder = epoch_dir(tmp_path, e)
        folder.mkdir(parents=True)
        (folder / ADAPTER_FILE).write_bytes(b"x")
        (folder / HEAD_FILE).write_bytes(b"x")
    assert best_epoch(tmp_path) is None and default_epoch(tmp_path, None) == 4  # no validation: the last
    rows = [
        {"epoch": 1, "val_criterion": "image_auroc", "val_score": 0.7},
        {"epoch": 2, "val_criterion": "image_auroc", "val_score": 0.9},
        {"epoch": 3, "val_criterion": "image_auroc", "val_score": 0.9},  # a tie keeps the earlier epoch
        {"epoch": 4, "val_criterion": "image_auroc", "val_score": 0.8},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert best_epoch(tmp_path) == 2 and default_epoch(tmp_path, None) == 2 and default_epoch(tmp_path, 4) == 4
    shutil.rmtree(epoch_dir(tmp_path, 2))  # only epochs still saved count
    assert best_epoch(tmp_path) == 3
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write('{"epoch": 5, "val_sc')  # a line torn by a crash mid-write: one line, not a traceback
    with pytest.raises(DataError, match=r"metrics.jsonl:5: not a JSON line"):
        best_epoch(tmp_path)


@pytest.mark.slow
def test_eval_target_frr_threshold_from_good_validation_images(run2, synth, capsys):
    import math

    from train.data import AnomalyDataset
    from train.evaluate import EvalOptions, predict
    from train.run_state import load_run_model, read_run_config

    assert main(["eval", "--run", str(run2), "--data", str(synth), "--target-frr", "0.5", "--heatmaps", "0"]) == 0
    capsys.readouterr()
    thr = json.loads((run2 / "threshold.json").read_text())
    cfg = read_run_config(run2)
    val = plan_splits(load_samples(synth, splits=SPLITS), cfg.data, cfg.optim.seed).role("val")
    good = [s for s in val if s.label == 0]
    model, info = load_run_model(run2, thr["epoch"])
    scores = predict(
        model, AnomalyDataset(good, info.image_size, info.mean, info.std), EvalOptions(), progress=False
    ).scores
    assert thr["images"] == len(good) and "order-statistic" in thr["method"]
    from edge_runtime.thresholds import frr_threshold  # the maths is tested in tests/enroll; here the wiring

    expected = frr_threshold(scores, 0.5, 0.95, best_effort=True)
    assert thr["value"] == pytest.approx(expected.value, abs=1e-6) and thr["frr"] == pytest.approx(expected.frr_bound)
    assert math.isfinite(thr["far"])
