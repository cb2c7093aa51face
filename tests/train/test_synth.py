"""synth-data: MVTec layout readable by train.data, exact binary masks, determinism by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.imageio import read_mask, read_rgb
from train.data import load_samples
from train.synth import DEFECTS, TEXTURES, SynthSpec, make_synthetic_dataset, synth_image


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_data_command_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert (
        main(["synth-data", str(out), "--categories", "2", "--size", "64", "--train-good", "3", "--per-class", "2"])
        == 0
    )
    assert "wrote 22 images and 12 masks" in capsys.readouterr().out
    samples = load_samples(out)
    assert sorted({s.category for s in samples}) == ["metal", "wood"]
    test = [s for s in samples if s.split == "test" and s.category == "wood"]
    assert sorted({s.defect for s in test}) == sorted(("good", *DEFECTS))
    for s in test:
        img = read_rgb(s.image_path)
        assert img.shape == (64, 64, 3)
        if s.label:
            m = read_mask(s.mask_path)
            assert m.shape == (64, 64) and 0 < m.mean() < 0.2
    # Masks are 8-bit 0/255 files.
    import cv2

    mask_file = next(s.mask_path for s in test if s.label)
    assert set(np.unique(cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED))) == {0, 255}


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path) -> None:
    spec = SynthSpec(seed=7, categories=4, size=48, train_good=2, per_class=1)
    a = _tree(make_synthetic_dataset(tmp_path / "a", spec, progress=False).root)
    b = _tree(make_synthetic_dataset(tmp_path / "b", spec, progress=False).root)
    assert a == b and len(a) == 4 * (2 + 4 + 3) + 1
    c = _tree(
        make_synthetic_dataset(
            tmp_path / "c", SynthSpec(seed=8, categories=4, size=48, train_good=2, per_class=1), progress=False
        ).root
    )
    assert c.keys() == a.keys()
    differing = [k for k in a if k.endswith(".png") and a[k] != c[k]]
    assert len(differing) == len(a) - 1  # every image changes with the seed


def test_images_independent_of_counts() -> None:
    # An image depends only on (seed, category, split, class, index): more images do not
    # reshuffle the existing ones.
    img1, m1 = synth_image(3, "fabric", "test", "crack", 1, 64)
    img2, m2 = synth_image(3, "fabric", "test", "crack", 1, 64)
    img3, _ = synth_image(3, "fabric", "test", "crack", 2, 64)
    assert np.array_equal(img1, img2) and np.array_equal(m1, m2) and not np.array_equal(img1, img3)


@pytest.mark.parametrize("category", list(TEXTURES))
def test_defect_changes_pixels_only_inside_mask(category: str) -> None:
    for code, d in enumerate(DEFECTS, start=1):
        img, mask = synth_image(5, category, "test", d, 0, 64)
        texture = TEXTURES[category](np.random.default_rng([5, list(TEXTURES).index(category), 1, code, 0, 0]), 64)
        texture = np.clip(np.rint(texture), 0, 255).astype(np.uint8)
        assert mask is not None and mask.any()
        inside = mask > 0
        np.testing.assert_array_equal(img[~inside], texture[~inside])
        # The defect is visible: mean change inside the mask is large.
        assert np.abs(img[inside].astype(int) - texture[inside].astype(int)).mean() > 20


def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["synth-data", str(tmp_path), "--categories", "1", "--size", "32", "--train-good", "1", "--per-class", "1"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["synth-data", str(tmp_path / "x"), "--categories", "9"]) == 2
    assert "categories must be between 1 and 6" in capsys.readouterr().err
