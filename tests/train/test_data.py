"""Data readers on the real sample data and on small folders built here; bad input -> DataError
naming the file, and exit code 2 through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.errors import DataError
from edge_runtime.preprocess import CLIP_MEAN, CLIP_STD, normalize, prepare
from train.data import AnomalyDataset, load_samples, parse_label

MEAN, STD = CLIP_MEAN, CLIP_STD


def _img(path: Path, h: int = 20, w: int = 24, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8) // 2 + value // 2)
    return path


def _mask(path: Path, h: int = 20, w: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    m[5:10, 6:12] = 255
    cv2.imwrite(str(path), m)
    return path


def make_mvtec(root: Path, category: str = "widget", with_gt: bool = True) -> Path:
    cat = root / category
    for i in range(3):
        _img(cat / "train" / "good" / f"{i:03d}.png")
    for i in range(2):
        _img(cat / "test" / "good" / f"{i:03d}.png")
    for i in range(2):
        _img(cat / "test" / "scratch" / f"{i:03d}.png")
        if with_gt:
            _mask(cat / "ground_truth" / "scratch" / f"{i:03d}_mask.png")
    return cat


# ---------------------------------------------------------------- real data


def test_real_mvtec_bottle(mvtec_root: Path) -> None:
    samples = load_samples(mvtec_root)
    assert {s.category for s in samples} == {"bottle"}
    train_good = [s for s in samples if s.split == "train"]
    test = [s for s in samples if s.split == "test"]
    assert len(train_good) == 30 and all(s.label == 0 for s in train_good)
    assert len(test) == 34 and sum(s.label for s in test) == 24
    assert {s.defect for s in test} == {"good", "broken_large", "broken_small", "contamination"}
    for s in test:
        assert (s.mask_path is not None) == (s.label == 1)
        if s.mask_path:
            assert s.mask_path.name == s.image_path.stem + "_mask.png"
            assert s.mask_path.parent.name == s.defect
    # The category folder itself works as root too.
    assert load_samples(mvtec_root / "bottle", splits=("test",)) == test


def test_real_dataset_items_match_device_preprocessing(mvtec_root: Path) -> None:
    from edge_runtime.imageio import read_rgb

    samples = load_samples(mvtec_root, splits=("test",))
    anomalous = next(i for i, s in enumerate(samples) if s.label == 1)
    ds = AnomalyDataset(samples, (64, 64), MEAN, STD)
    item = ds[anomalous]
    assert item["pixel_values"].shape == (3, 64, 64) and item["pixel_values"].dtype.is_floating_point
    expected = normalize(prepare(read_rgb(samples[anomalous].image_path), (64, 64))[None], MEAN, STD)[0]
    np.testing.assert_array_equal(item["pixel_values"].numpy(), expected)
    mask = item["mask"].numpy()
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0.0, 1.0} and mask.sum() > 0
    assert int(item["label"]) == 1 and bool(item["has_mask"]) and item["index"] == anomalous
    good = ds[next(i for i, s in enumerate(samples) if s.label == 0)]
    assert good["mask"].sum() == 0 and bool(good["has_mask"])  # MVTec: normal pixel truth is known


def test_real_kolektor(kolektor_root: Path) -> None:
    samples = load_samples(kolektor_root, splits=("test",), categories=["commutator"])
    assert len(samples) == 35 and sum(s.label for s in samples) == 25
    assert {s.defect for s in samples if s.label} == {"crack"}
    ds = AnomalyDataset(samples, 32, MEAN, STD)
    assert ds[0]["pixel_values"].shape == (3, 32, 32)


def test_torch_dataloader_collates(mvtec_root: Path) -> None:
    import torch

    samples = load_samples(mvtec_root, splits=("test",))[:4]
    batch = next(iter(torch.utils.data.DataLoader(AnomalyDataset(samples, 32, MEAN, STD), batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["mask"].shape == (4, 32, 32) and batch["has_mask"].dtype == torch.bool
    assert batch["index"].tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------- small folders


def test_folder_of_categories_and_filters(tmp_path: Path) -> None:
    make_mvtec(tmp_path, "alpha")
    make_mvtec(tmp_path, "beta", with_gt=False)
    samples = load_samples(tmp_path)
    assert sorted({s.category for s in samples}) == ["alpha", "beta"]
    assert len(samples) == 14
    beta = load_samples(tmp_path, splits=("test",), categories=["beta"])
    assert len(beta) == 4 and all(s.mask_path is None and not s.pixel_gt for s in beta)
    with pytest.raises(DataError, match="category 'gamma' not in .*available: alpha, beta"):
        load_samples(tmp_path, categories=["gamma"])


def test_mask_resized_nearest_stays_binary(tmp_path: Path) -> None:
    cat = make_mvtec(tmp_path)
    samples = load_samples(cat, splits=("test",))
    ds = AnomalyDataset(samples, (17, 13), MEAN, STD)
    i = next(i for i, s in enumerate(samples) if s.label)
    m = ds[i]["mask"].numpy()
    assert m.shape == (17, 13) and set(np.unique(m)) == {0.0, 1.0}


def test_meta_json(tmp_path: Path) -> None:
    make_mvtec(tmp_path, "widget")
    meta = {
        "train": {
            "widget": [
                {
                    "img_path": "widget/train/good/000.png",
                    "mask_path": "",
                    "cls_name": "widget",
                    "specie_name": "good",
                    "anomaly": 0,
                }
            ]
        },
        "test": {
            "widget": [
                {
                    "img_path": "widget/test/good/000.png",
                    "mask_path": "",
                    "cls_name": "widget",
                    "specie_name": "good",
                    "anomaly": 0,
                },
                {
                    "img_path": "widget/test/scratch/001.png",
                    "mask_path": "widget/ground_truth/scratch/001_mask.png",
                    "cls_name": "widget",
                    "specie_name": "scratch",
                    "anomaly": 1,
                },
            ]
        },
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    samples = load_samples(tmp_path, splits=("test",))  # meta.json wins over the folders
    assert [(s.label, s.defect, s.mask_path is not None) for s in samples] == [(0, "good", False), (1, "scratch", True)]
    assert (
        load_samples(tmp_path / "meta.json", splits=("train",))[0].image_path == tmp_path / "widget/train/good/000.png"
    )


def test_csv_image_level(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _img(tmp_path / "imgs" / f"{name}.png")
    (tmp_path / "labels.csv").write_text(
        "image_id,label,description\nimgs/a.png,good,clean part\nimgs/b,NG,scratch on lid\nimgs/c.png,1,\n"
    )
    with pytest.raises(DataError, match="3 rows have no split"):
        load_samples(tmp_path / "labels.csv")  # one file must not silently serve training and evaluation
    samples = load_samples(tmp_path / "labels.csv", unsplit="seeded")
    assert [s.label for s in samples] == [0, 1, 1] and {s.split for s in samples} == {""}
    assert {s.split for s in load_samples(tmp_path / "labels.csv", unsplit="test")} == {"test"}
    assert samples[1].image_path.name == "b.png" and samples[1].description == "scratch on lid"
    assert all(s.mask_path is None and not s.pixel_gt for s in samples)
    item = AnomalyDataset(samples, 16, MEAN, STD)[1]
    assert not bool(item["has_mask"]) and item["mask"].sum() == 0
    assert load_samples(tmp_path, unsplit="seeded") == samples  # a folder with one CSV


@pytest.mark.parametrize(
    "text,label",
    [
        ("normal", 0),
        ("Good", 0),
        ("OK", 0),
        ("0", 0),
        ("anomaly", 1),
        ("abnormal", 1),
        ("ng", 1),
        ("defect", 1),
        ("1", 1),
    ],
)
def test_parse_label(text: str, label: int) -> None:
    assert parse_label(text, "x") == label


# ---------------------------------------------------------------- bad input


def _check(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    # stderr may also hold a progress bar; the error itself is rendered once, on one line.
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_check_data_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_mvtec(tmp_path, "alpha")
    assert main(["check-data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "7 images OK" in out


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(["check-data", str(tmp_path / "nope")], capsys, "data not found", str(tmp_path / "nope"))
    cat = make_mvtec(tmp_path)
    import shutil

    shutil.rmtree(cat / "train" / "good")
    _check(["check-data", str(cat)], capsys, "missing folder", str(cat / "train" / "good"))


def test_missing_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cat = make_mvtec(tmp_path)
    (cat / "ground_truth" / "scratch" / "001_mask.png").unlink()
    _check(["check-data", str(cat)], capsys, "mask not found", "001_mask.png")


def test_unreadable_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cat = make_mvtec(tmp_path)
    bad = cat / "test" / "good" / "001.png"
    bad.write_bytes(b"this is not a png")
    _check(["check-data", str(cat)], capsys, "cannot decode image", str(bad))
    samples = load_samples(cat, splits=("test",))
    ds = AnomalyDataset(samples, 16, MEAN, STD)
    with pytest.raises(DataError, match="cannot decode image"):
        ds[[s.image_path for s in samples].index(bad)]


def test_mask_size_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cat = make_mvtec(tmp_path)
    bad = _mask(cat / "ground_truth" / "scratch" / "000_mask.png", h=21, w=24)
    _check(["check-data", str(cat)], capsys, "mask size 24x21 does not match image size 24x20", str(bad))


def test_empty_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cat = make_mvtec(tmp_path)
    (cat / "test" / "crack").mkdir()
    _check(["check-data", str(tmp_path)], capsys, "empty class folder", str(cat / "test" / "crack"))


def test_unknown_csv_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _img(tmp_path / "a.png")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("image_id,label,description\na.png,maybe,\n")
    _check(["check-data", str(csv_path)], capsys, f"{csv_path} line 2", "unknown label 'maybe'")


def test_unrecognised_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "random").mkdir()
    _check(["check-data", str(tmp_path)], capsys, "cannot recognise the data set layout", str(tmp_path))


def test_visa_layout_with_split_csv(tmp_path: Path) -> None:
    cat = tmp_path / "candle"
    # VisA reuses names across Normal/Anomaly; the split must follow the relative path.
    for name in ("0000", "0001", "0002"):
        _img(cat / "Data" / "Images" / "Normal" / f"{name}.JPG")
    for name in ("0000", "0001"):
        _img(cat / "Data" / "Images" / "Anomaly" / f"{name}.JPG")
        _mask(cat / "Data" / "Masks" / "Anomaly" / f"{name}.png")
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\n"
        "candle,train,normal,candle/Data/Images/Normal/0000.JPG,\n"
        "candle,train,normal,candle/Data/Images/Normal/0001.JPG,\n"
        "candle,test,normal,candle/Data/Images/Normal/0002.JPG,\n"
        "candle,test,anomaly,candle/Data/Images/Anomaly/0000.JPG,candle/Data/Masks/Anomaly/0000.png\n"
        "candle,test,anomaly,candle/Data/Images/Anomaly/0001.JPG,candle/Data/Masks/Anomaly/0001.png\n"
    )
    test = load_samples(tmp_path, splits=("test",))
    assert [(s.image_path.parent.name, s.image_path.name, s.label) for s in test] == [
        ("Normal", "0002.JPG", 0),
        ("Anomaly", "0000.JPG", 1),
        ("Anomaly", "0001.JPG", 1),
    ]
    assert all((s.mask_path is not None) == bool(s.label) and s.pixel_gt for s in test)
    assert len(load_samples(cat, splits=("train",))) == 2  # the category folder as root finds ../split_csv
    ds = AnomalyDataset(test, 16, MEAN, STD)
    assert ds[1]["mask"].sum() > 0
