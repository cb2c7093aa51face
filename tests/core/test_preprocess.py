from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import DataError
from edge_runtime.preprocess import Roi, normalize, prepare, resize_to, to_rgb


def test_normalize_matches_formula():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = normalize(x, mean, std)
    assert out.shape == (2, 3, 5, 7) and out.dtype == np.float32
    ref = (x[0, 3, 4, 2] / 255.0 - 0.3) / 2.0
    assert out[0, 2, 3, 4] == pytest.approx(ref, abs=1e-6)


def test_prepare_shape_order_and_roi():
    img = np.zeros((400, 600, 3), np.uint8)
    img[100:200, 300:400] = (255, 0, 0)  # red square in RGB
    out = prepare(img, (32, 32), roi=Roi.parse("300,100,100,100"))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert tuple(out[16, 16]) == (255, 0, 0)
    assert tuple(prepare(img, (32, 32), roi=Roi(300, 100, 100, 100), color_order="BGR")[16, 16]) == (0, 0, 255)


def test_pyramid_then_area_close_to_plain_area():
    import cv2

    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 256, (2160, 4096, 3), dtype=np.uint8), (0, 0), 8)
    fast = resize_to(img, (224, 224)).astype(np.float32)
    slow = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(fast - slow).mean() < 2.0


def test_roi_outside_image_and_bad_roi():
    with pytest.raises(DataError, match="outside"):
        prepare(np.zeros((10, 10, 3), np.uint8), (8, 8), roi=Roi(5, 5, 10, 10))
    with pytest.raises(DataError, match="ROI must be"):
        Roi.parse("1,2,3")


def test_mono_and_bad_dtype():
    assert to_rgb(np.full((4, 4), 7, np.uint8), "Mono8").shape == (4, 4, 3)
    with pytest.raises(DataError, match="8-bit"):
        to_rgb(np.zeros((4, 4), np.uint16), "Mono16")


@pytest.mark.parametrize("fmt", ["BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8"])
def test_quad_binning_gives_each_quad_its_colour(fmt):
    from edge_runtime.preprocess import bin_bayer
    from edge_runtime.sources.synthetic import mosaic

    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 101, 30
    rgb[0::2, :, 1] = 99  # the two greens of a quad differ: their mean must come out
    out = bin_bayer(mosaic(rgb, fmt), fmt)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert out.reshape(-1, 3).tolist() == [[200, 100, 30]] * 24


def test_large_bayer_frame_takes_the_rgb_files_path():
    """Device (4K Bayer, quad-binned) and training (the RGB file, 2x2-binned) meet at the same
    half-resolution image, then share the resize: their model inputs agree."""
    import cv2

    from edge_runtime.sources.synthetic import mosaic

    rng = np.random.default_rng(2)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (1080, 2048, 3), dtype=np.uint8), (0, 0), 6)
    from_bayer = prepare(mosaic(rgb, "BayerRG8"), (224, 224), pixel_format="BayerRG8").astype(np.float32)
    from_file = prepare(rgb, (224, 224)).astype(np.float32)
    assert np.abs(from_bayer - from_file).mean() < 0.5 and np.abs(from_bayer - from_file).max() <= 3
