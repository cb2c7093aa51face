"""synthetic:// frames, and Bayer frames demosaicing to the right colours via preprocess.to_rgb."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_runtime.errors import SourceError
from edge_runtime.frames import FrameSource
from edge_runtime.preprocess import to_rgb
from edge_runtime.sources import open_source
from edge_runtime.sources.synthetic import mosaic

BAYER = ["BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8"]


def grab_all(uri: str, **options):
    with open_source(uri, options) as src:
        assert isinstance(src, FrameSource)
        frames = list(src.frames())
        return frames, dict(src.stats())


def test_count_ids_and_metadata():
    frames, stats = grab_all("synthetic://?width=48&height=32&count=7&defect_every=3")
    assert [f.frame_id for f in frames] == list(range(7))
    assert all(f.image.shape == (32, 48, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.meta["pixel_format"] == "RGB8" for f in frames)
    assert [f.meta["defect"] for f in frames] == [False, False, True, False, False, True, False]
    assert stats["delivered"] == 7 and stats["defects"] == 2
    stamps = [f.timestamp_ns for f in frames]
    assert stamps == sorted(stamps)


def test_deterministic_by_seed_and_defects_are_dark_marks():
    a, _ = grab_all("synthetic://?width=64&height=64&count=4&seed=3&defect_every=4")
    b, _ = grab_all("synthetic://?width=64&height=64&count=4&seed=3&defect_every=4")
    c, _ = grab_all("synthetic://?width=64&height=64&count=4&seed=4&defect_every=4")
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert not np.array_equal(a[0].image, c[0].image)
    good, bad = a[2].image, a[3].image
    assert bad.min() <= 30 < good.min()  # the scratch is much darker than the texture
    x, y, w, h = a[3].meta["defect_box"]
    assert bad[y : y + h, x : x + w].min() <= 30


def test_fps_pacing():
    t0 = time.monotonic()
    frames, _ = grab_all("synthetic://?width=16&height=16&count=6&fps=50")
    assert len(frames) == 6
    assert time.monotonic() - t0 >= 5 / 50 - 0.01


def test_mosaic_puts_each_colour_where_the_pattern_says():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    expected = {
        "BayerRG8": [[10, 20], [20, 30]],
        "BayerBG8": [[30, 20], [20, 10]],
        "BayerGR8": [[20, 10], [30, 20]],
        "BayerGB8": [[20, 30], [10, 20]],
    }
    for fmt, block in expected.items():
        assert mosaic(rgb, fmt)[:2, :2].tolist() == block, fmt
        assert mosaic(rgb, fmt)[2:, 2:].tolist() == block, fmt


@pytest.mark.parametrize("fmt", BAYER)
def test_bayer_demosaic_gives_back_the_known_colours(fmt):
    # Left half orange, right half blue-ish: a swapped R/B or a one-pixel phase error shows.
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (220, 120, 20)
    rgb[:, 16:] = (30, 90, 200)
    out = to_rgb(mosaic(rgb, fmt), fmt)
    assert out.shape == (32, 32, 3)
    inner_left, inner_right = out[4:28, 2:13].reshape(-1, 3), out[4:28, 19:30].reshape(-1, 3)
    assert np.abs(inner_left.astype(int) - (220, 120, 20)).max() <= 2
    assert np.abs(inner_right.astype(int) - (30, 90, 200)).max() <= 2


@pytest.mark.parametrize("fmt", ["BayerRG8", "BayerGB8"])
def test_synthetic_bayer_frames_match_the_rgb_frames_after_demosaic(fmt):
    rgb_frames, _ = grab_all("synthetic://?width=64&height=48&count=2&seed=1&defect_every=0")
    raw_frames, _ = grab_all(f"synthetic://?width=64&height=48&count=2&seed=1&defect_every=0&pixel_format={fmt}")
    for rgb, raw in zip(rgb_frames, raw_frames):
        assert raw.image.shape == (48, 64) and raw.meta["pixel_format"] == fmt
        back = to_rgb(raw.image, raw.meta["pixel_format"]).astype(int)
        err = np.abs(back[2:-2, 2:-2] - rgb.image[2:-2, 2:-2].astype(int)).mean(axis=(0, 1))
        assert err.max() < 6, err
        # Read with the wrong pattern the colours are visibly off: the check has teeth.
        wrong = to_rgb(raw.image, "BayerBG8" if fmt == "BayerRG8" else "BayerGR8").astype(int)
        assert np.abs(wrong[2:-2, 2:-2] - rgb.image[2:-2, 2:-2].astype(int)).mean() > 2 * err.max()


def test_other_pixel_formats():
    (mono,), _ = grab_all("synthetic://?width=8&height=6&count=1&pixel_format=Mono8")
    (bgr,), _ = grab_all("synthetic://?width=8&height=6&count=1&pixel_format=BGR8")
    (rgb,), _ = grab_all("synthetic://?width=8&height=6&count=1")
    assert mono.image.shape == (6, 8) and np.array_equal(bgr.image[..., ::-1], rgb.image)
    assert np.array_equal(to_rgb(bgr.image, "BGR8"), rgb.image)


@pytest.mark.parametrize(
    "uri, message",
    [
        ("synthetic://?pixel_format=YUV422", "cannot make pixel_format 'YUV422'"),
        ("synthetic://?width=31&height=20&pixel_format=BayerRG8", "even width and height"),
        ("synthetic://?width=abc", "'width'"),
        ("synthetic://?colour=red", "unknown query key 'colour'"),
        ("synthetic://?fps=-2", "fps"),
    ],
)
def test_bad_synthetic_uris(uri, message):
    with pytest.raises(SourceError) as err:
        open_source(uri)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_close_is_idempotent_and_ends_iteration():
    src = open_source("synthetic://?width=8&height=8")  # endless
    it = src.frames()
    assert next(it).frame_id == 0
    src.close()
    src.close()
    assert list(it) == [] and src.read() is None
    with pytest.raises(SourceError, match="closed"):
        src.open()


def test_large_frames_come_from_a_pre_rendered_ring_uncopied():
    """A 4K camera delivers by DMA: the synthetic stand-in renders a ring once and rotates it."""
    uri = "synthetic://?width=64&height=32&count=9&defect_every=4&ring=4&pixel_format=BayerRG8"
    frames, stats = grab_all(uri)
    assert [f.meta["defect"] for f in frames] == [i % 4 == 3 for i in range(9)] and stats["defects"] == 2
    assert frames[5].image is frames[1].image and not frames[5].image.flags.writeable
    rendered, _ = grab_all(uri.replace("&ring=4", "&ring=0"))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames[:4], rendered[:4]))
    with pytest.raises(SourceError, match="multiple of defect_every"):
        grab_all("synthetic://?width=64&height=32&defect_every=4&ring=6")
