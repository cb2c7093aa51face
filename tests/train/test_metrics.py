"""Metrics against scikit-learn on random data, hand-computed toys, and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from edge_runtime.errors import DataError
from train.metrics import (
    Metrics,
    aupro,
    auroc,
    average_precision,
    compute_metrics,
    f1_max,
    f1_max_margin_threshold,
    mean_metrics,
    pixel_ap,
    pixel_auroc,
    pro_curve,
)


@pytest.mark.parametrize("seed", range(5))
def test_image_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    # Rounded scores create ties, which is where implementations usually disagree.
    s = np.round(rng.random(n) + 0.4 * y, 1 if seed % 2 else 6)
    assert auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    p, r, t = skm.precision_recall_curve(y, s)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)[:-1]
    best, thr = f1_max(y, s)
    assert best == pytest.approx(f1.max(), abs=1e-12)
    assert skm.f1_score(y, s >= thr) == pytest.approx(best, abs=1e-12)


def test_pixel_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    masks = np.zeros((4, 16, 16), bool)
    masks[1, 3:7, 4:9] = True
    masks[2, 10:12, 1:15] = True
    maps = rng.random(masks.shape) * 0.7 + masks * 0.3
    assert pixel_auroc(masks, maps) == pytest.approx(skm.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert pixel_ap(masks.astype(np.float32), maps) == pytest.approx(
        skm.average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12
    )


def test_hand_computed_image_toy() -> None:
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    assert auroc(y, s) == pytest.approx(0.75)
    # thresholds 0.8: P=1 R=.5; 0.4: P=.5 R=.5; 0.35: P=2/3 R=1 -> AP = .5*1 + .5*2/3
    assert average_precision(y, s) == pytest.approx(0.5 + 1 / 3)
    assert f1_max(y, s) == pytest.approx((0.8, 0.35))  # P=2/3, R=1 -> F1 = 0.8 at score >= 0.35


def test_aupro_perfect_and_inverted() -> None:
    masks = np.zeros((3, 12, 12), bool)
    masks[0, 2:5, 2:5] = True
    masks[1, 6:11, 1:3] = True
    masks[1, 0:2, 9:12] = True
    maps = masks.astype(float) * 0.9 + 0.05
    assert aupro(masks, maps) == pytest.approx(1.0)
    assert aupro(masks, 1 - maps) == pytest.approx(0.0)


def test_aupro_hand_computed_one_region() -> None:
    # One region of 2 px, 2 normal px. Sorted scores: 0.8 (region), 0.4 (normal), 0.35
    # (region), 0.1 (normal). Curve (FPR, PRO): (0,0) (0,.5) (.5,.5) (.5,1) (1,1).
    masks = np.array([[[0, 0, 1, 1]]], bool)
    maps = np.array([[[0.1, 0.4, 0.35, 0.8]]])
    assert aupro(masks, maps) == pytest.approx(0.5)  # PRO is 0.5 on FPR (0, 0.3]
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)


def test_aupro_hand_computed_regions_weighted_equally() -> None:
    # Regions A = {0} (1 px) and B = {3, 4} (2 px); normals at 1, 2, 5. Each region weighs
    # 1/2 in PRO however big it is. Sorted: .9 A (PRO .5), .7 B (.75), .5 n (FPR 1/3),
    # .3 n (2/3), .2 B (PRO 1), .1 n (FPR 1).
    masks = np.array([[[1, 0, 0, 1, 1, 0]]], bool)
    maps = np.array([[[0.9, 0.5, 0.1, 0.7, 0.2, 0.3]]])
    fpr, pro = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.75, 0.75, 0.75, 1, 1])
    assert aupro(masks, maps) == pytest.approx(0.75)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.75 * 2 / 3 + 1 / 3)
    # Pixel AUROC would weight B's pixels twice as much as A's: PRO must not.
    assert pixel_auroc(masks, maps) != pytest.approx(aupro(masks, maps, fpr_limit=1.0))


def test_aupro_regions_are_8_connected_and_per_image() -> None:
    # (0,0) touches (1,1) only diagonally: with 8-connectivity (MVTec's evaluation) the three
    # pixels are one region and finding (0,0) gives PRO 1/3 (4-connectivity would give 1/2).
    # Curve (0,0) (0,1/3) (1,1): PRO at FPR .3 is 1/3 + 2/3*.3.
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = 1.0
    assert aupro(masks, maps) == pytest.approx((1 / 3 + (1 / 3 + 2 / 3 * 0.3)) / 2)
    # The same region split over two images counts as two regions.
    two = np.zeros((2, 4, 4), bool)
    two[0, 0, 0] = two[1, 1, 1] = two[1, 1, 2] = True
    assert pro_curve(two, np.stack([maps[0], np.zeros((4, 4))]))[1][1] == pytest.approx(0.5)


def test_single_class_gives_nan_and_bad_input_raises() -> None:
    assert math.isnan(auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(average_precision([1, 1], [0.1, 0.2]))
    assert all(math.isnan(v) for v in f1_max([0, 0], [0.1, 0.2]))
    assert math.isnan(aupro(np.zeros((2, 4, 4), bool), np.random.default_rng(0).random((2, 4, 4))))
    with pytest.raises(DataError, match="labels must be 0/1"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(DataError, match="2 labels but 3 scores"):
        auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="NaN"):
        auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(DataError, match="differ in shape"):
        aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 5)))


def test_compute_and_mean() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1])
    masks = np.zeros((4, 8, 8), bool)
    masks[2:, 2:5, 2:5] = True
    a = compute_metrics(y, [0.1, 0.2, 0.7, 0.9], masks, masks * 0.8 + rng.random(masks.shape) * 0.1)
    assert a.image_auroc == 1.0 and a.f1_max == 1.0 and a.f1_threshold == 0.7 and a.aupro == pytest.approx(1.0)
    b = compute_metrics(y, [0.9, 0.2, 0.7, 0.1])  # image-level only
    assert b.pixel_auroc is None and b.image_auroc == 0.25  # 1 of 4 (anomalous, normal) pairs ordered right
    mean = mean_metrics({"a": a, "b": b})
    assert mean["image_auroc"] == pytest.approx(0.625) and mean["aupro"] == pytest.approx(1.0)
    only_image = mean_metrics({"b": b})
    assert only_image["pixel_auroc"] is None
    nan_row = Metrics(2, 0, float("nan"), float("nan"), float("nan"), float("nan"))
    assert mean_metrics({"a": a, "n": nan_row})["image_auroc"] == 1.0


def test_pro_curve_matches_brute_force_per_threshold() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(11)
    masks = rng.random((3, 10, 10)) > 0.8
    maps = np.round(rng.random(masks.shape) * 0.6 + masks * 0.3, 2)
    fpr, pro = pro_curve(masks, maps)
    thresholds = np.unique(maps)[::-1]
    for k, t in enumerate(thresholds, start=1):
        overlaps = []
        for i in range(3):
            lab, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
            overlaps += [(maps[i][lab == r] >= t).mean() for r in range(1, n + 1)]
        assert pro[k] == pytest.approx(np.mean(overlaps), abs=1e-12)
        assert fpr[k] == pytest.approx((maps[~masks] >= t).mean(), abs=1e-12)


def test_margin_threshold_is_midpoint_with_same_f1() -> None:
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    assert f1_max_margin_threshold(y, s) == pytest.approx((0.8, (0.35 + 0.1) / 2))
    rng = np.random.default_rng(4)
    y2 = rng.integers(0, 2, 60)
    s2 = rng.random(60) + 0.3 * y2
    best, thr = f1_max_margin_threshold(y2, s2)
    assert skm.f1_score(y2, s2 >= thr) == pytest.approx(best) and best == pytest.approx(f1_max(y2, s2)[0])
    assert f1_max(y2, s2)[1] > thr > s2[s2 < f1_max(y2, s2)[1]].max()
    assert f1_max_margin_threshold([0, 1], [0.5, 0.5]) == pytest.approx((2 / 3, 0.5))  # nothing lower: keep it
