from __future__ import annotations

import numpy as np
import pytest

from calibration.calibration_set import find_normal_images, sample_calibration_set
from calibration.labelled_csv import read_labelled_csv
from calibration.precision_report import find_labelled_images
from edge_runtime.errors import DataError


def _csv(tmp_path, rows):
    import cv2

    for name, _ in rows:
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 100, np.uint8))
    p = tmp_path / "labels.csv"
    p.write_text("image_id,label\n" + "".join(f"{n},{lab}\n" for n, lab in rows))
    return p


def test_same_vocabulary_as_training(tmp_path):
    p = _csv(tmp_path, [("a.png", "good"), ("b.png", "NG"), ("c.png", "ok"), ("d.png", "defect")])
    assert [(i.name, lab) for i, lab, _ in read_labelled_csv(p)] == [
        ("a.png", 0),
        ("b.png", 1),
        ("c.png", 0),
        ("d.png", 1),
    ]
    assert [f.name for f in sample_calibration_set(p, 2, seed=0).files] in (["a.png", "c.png"], ["c.png", "a.png"])


def test_unknown_label_names_the_line(tmp_path):
    p = _csv(tmp_path, [("a.png", "good"), ("b.png", "maybe")])
    with pytest.raises(DataError, match=r"labels\.csv line 3: unknown label 'maybe'"):
        read_labelled_csv(p)


@pytest.mark.parametrize("fn, what", [(find_normal_images, "calibration"), (find_labelled_images, "test")])
def test_image_source_must_exist_and_be_a_folder_or_csv(tmp_path, fn, what):
    with pytest.raises(DataError, match=f"^{what} image source not found: .*nowhere$"):
        fn(tmp_path / "nowhere")
    (tmp_path / "labels.txt").write_text("image_id,label\n")
    with pytest.raises(DataError, match=f"^{what} image source must be a folder or a .csv file: .*labels.txt$"):
        fn(tmp_path / "labels.txt")
