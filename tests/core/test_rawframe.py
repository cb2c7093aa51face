"""The torch-free half of raw-frame bundles: formats, the binning plan, resampling weights,
and the manifest fields (old bundles keep loading)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.bundle import PreprocessSpec
from edge_runtime.config import from_mapping
from edge_runtime.errors import ConfigError
from edge_runtime.rawframe import frame_shape, make_plan, mosaic_frame, parse_size, pixel_format, resample_matrix


def test_4k_bayer_bins_whole_quads_without_cropping():
    p = make_plan("bayer_rg8", (2160, 4096), (224, 224))
    assert (p.y0, p.y1, p.x0, p.x1) == (0, 2160, 0, 4096)  # factors divide: no full-frame copy
    assert (p.by, p.bx, p.grid_hw) == (8, 16, (270, 256))
    w = p.colour_weight()  # RGGB: R and B from one position each, G the mean of two
    assert w.shape == (4, 3) and np.allclose(w.sum(axis=0), 1.0)  # block means -> colour means
    assert w[0, 0] > 0 and w[3, 2] > 0 and w[1, 1] == w[2, 1] and w[0, 1] == 0


def test_roi_and_odd_sizes_trim_evenly_inside_the_roi():
    p = make_plan("rgb8", (1000, 1500), (224, 224), roi=(100, 50, 1001, 701))
    assert 50 <= p.y0 and p.y1 <= 751 and 300 <= p.x0 and p.x1 <= 3 * 1101
    assert p.grid_hw[0] >= 224 and p.grid_hw[1] >= 224 and p.bx % 3 == 0


def test_resample_weights_are_area_when_shrinking_and_linear_when_enlarging():
    a = resample_matrix(6, 3)
    assert np.allclose(a, np.kron(np.eye(3), [[0.5, 0.5]]))
    for n_in, n_out in ((270, 224), (100, 224), (7, 7)):
        m = resample_matrix(n_in, n_out)
        assert m.shape == (n_out, n_in) and np.allclose(m.sum(axis=1), 1.0) and (m >= 0).all()


def test_formats_sizes_and_mosaic():
    assert pixel_format("bayer_gb8") == "BayerGB8" and parse_size("4096x2160") == (2160, 4096)
    assert frame_shape("mono8", (10, 20)) == (10, 20) and frame_shape("bgr8", (10, 20)) == (10, 20, 3)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    assert mosaic_frame(rgb, "bayer_rg8").tolist() == [[10, 20], [20, 30]]
    with pytest.raises(ConfigError, match="choose from"):
        pixel_format("yuv422")
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_size("4096*2160")


def test_old_manifest_preprocess_loads_unchanged_and_new_fields_are_checked():
    old = from_mapping(
        PreprocessSpec, {"image_size": [224, 224], "color_order": "RGB", "input_layout": "NHWC_uint8", "resize": "area"}
    )
    assert not old.raw_frame and old.input_format == "" and old.input_size is None and old.roi is None
    raw = from_mapping(
        PreprocessSpec,
        {
            "image_size": [224, 224],
            "input_layout": "frame_uint8",
            "input_format": "bayer_rg8",
            "input_size": [2160, 4096],
            "roi": [0, 0, 4096, 2160],
        },
    )
    assert raw.raw_frame and raw.input_size == (2160, 4096)
    with pytest.raises(ConfigError, match="goes with input_format"):
        PreprocessSpec(image_size=(224, 224), input_layout="frame_uint8")
    with pytest.raises(ConfigError, match="even pixels"):
        PreprocessSpec(
            image_size=(224, 224),
            input_layout="frame_uint8",
            input_format="bayer_rg8",
            input_size=(100, 100),
            roi=(1, 0, 50, 50),
        )
