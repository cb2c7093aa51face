from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from calibration.calibration_set import find_normal_images, sample_calibration_set, set_hash
from edge_runtime.errors import DataError
from edge_runtime.imageio import read_rgb
from edge_runtime.preprocess import prepare


def test_same_seed_same_set_and_hash(bottle: Path) -> None:
    a = sample_calibration_set(bottle, 6, seed=3)
    b = sample_calibration_set(bottle, 6, seed=3)
    assert a.files == b.files and a.sha256 == b.sha256
    assert len(set(a.files)) == 6


def test_hash_changes_with_the_set(bottle: Path) -> None:
    a = sample_calibration_set(bottle, 6, seed=3)
    other_seed = sample_calibration_set(bottle, 6, seed=4)
    more = sample_calibration_set(bottle, 7, seed=3)
    assert a.files != other_seed.files and a.sha256 != other_seed.sha256
    assert a.sha256 != more.sha256
    # The hash is over the ordered file hashes: reordering changes it, and it is not a hash of names.
    assert set_hash(a.file_sha256) == a.sha256
    assert set_hash(tuple(reversed(a.file_sha256))) != a.sha256


def test_mvtec_category_uses_train_good_only(bottle: Path, mvtec_root: Path) -> None:
    files = find_normal_images(bottle)
    assert len(files) == 30
    assert all(f.parent == bottle / "train" / "good" for f in files)
    # An MVTec root with categories gives every category's train/good.
    assert find_normal_images(mvtec_root) == files


def test_csv_keeps_only_normal_rows(bottle: Path, tmp_path: Path) -> None:
    good = sorted((bottle / "train" / "good").glob("*.png"))[:3]
    bad = sorted((bottle / "test" / "broken_large").glob("*.png"))[:2]
    for f in good + bad:
        shutil.copy(f, tmp_path / f"{f.parent.name}_{f.name}")
    rows = ["image_id,label,description"]
    rows += [f"good_{f.name},0," for f in good]
    rows += [f"broken_large_{f.name},1,broken" for f in bad]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    files = find_normal_images(tmp_path / "labels.csv")
    assert [f.name for f in files] == sorted(f"good_{f.name}" for f in good)


def test_batches_are_the_device_preprocessing(bottle: Path) -> None:
    calib = sample_calibration_set(bottle, 3, seed=0)
    batches = list(calib.batches((32, 48), batch_size=2))
    assert [b.shape for b in batches] == [(2, 32, 48, 3), (1, 32, 48, 3)]
    assert all(b.dtype == np.uint8 for b in batches)
    expected = prepare(read_rgb(calib.files[2]), (32, 48))
    np.testing.assert_array_equal(batches[1][0], expected)


def test_empty_folder_and_too_many(tmp_path: Path, bottle: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no normal images found"):
        sample_calibration_set(tmp_path / "empty", 2)
    with pytest.raises(DataError, match="asked for 31 calibration images .* only 30"):
        sample_calibration_set(bottle, 31)
    with pytest.raises(DataError, match="not found"):
        sample_calibration_set(tmp_path / "nope", 2)
    with pytest.raises(DataError, match=">= 1"):
        sample_calibration_set(bottle, 0)
