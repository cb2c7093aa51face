"""Input alarm on real images: normal replays raise nothing; a darkened and a blurred replay
(lights failing, lens defocused) raise the alarm on the verdicts and on the status topic."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.fewshot import list_good_images
from edge_runtime.frames import Frame
from edge_runtime.imageio import read_rgb
from edge_runtime.input_alarm import (
    InputMonitor,
    StationMonitor,
    frame_stats,
    load_profile,
    main,
    profile_from_images,
)


def _dark(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) * 0.35).astype(np.uint8)


def _blur(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), 3.0)


@pytest.fixture(scope="module", params=[("mvtec_ad", "bottle"), ("kolektorsdd", "commutator")], ids=lambda p: p[1])
def category(request, shared_data):
    root = shared_data / request.param[0] / request.param[1]
    profile = profile_from_images(list_good_images(root / "train" / "good"))
    test = [read_rgb(p) for p in list_good_images(root / "test")]
    return profile, test


def _replay(profile, images) -> list[bool]:
    mon = InputMonitor(profile, raise_after=3, clear_after=3)
    return [mon.update(img).alarm for img in images]


def test_normal_replay_raises_nothing(category):
    profile, test = category
    assert not any(_replay(profile, test))  # good and defective test parts alike


@pytest.mark.parametrize("change,reason", [(_dark, "brightness_low"), (_blur, "sharpness_low")])
def test_darkened_and_blurred_replays_raise_the_alarm(category, change, reason):
    profile, test = category
    frames = test[:4] + [change(img) for img in test[4:10]] + test[10:14]
    flags = _replay(profile, frames)
    assert flags[:4] == [False] * 4
    assert flags[4:6] == [False, False] and all(flags[6:10])  # raised on the 3rd bad frame
    assert flags[10:12] == [True, True] and flags[12] is False  # cleared after 3 good ones
    assert reason in profile.check(frame_stats(change(test[0])))


def _moved(img: np.ndarray, frac: float = 0.08) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    shift = np.float32([[1, 0, frac * w], [0, 1, 0.5 * frac * h]])
    return cv2.warpAffine(img, shift, (w, h), borderMode=cv2.BORDER_REPLICATE)


def test_camera_moved_raises_layout_low_where_the_layout_is_stable(shared_data):
    good = list_good_images(shared_data / "mvtec_ad" / "bottle" / "train" / "good")
    profile = profile_from_images(good)
    assert "layout" in profile.stats and len(profile.reference) == 16 * 16
    test = [read_rgb(p) for p in list_good_images(shared_data / "mvtec_ad" / "bottle" / "test")]
    assert not any(_replay(profile, test))
    flags = _replay(profile, [_moved(img) for img in test[:5]])
    assert flags == [False, False, True, True, True]
    assert "layout_low" in InputMonitor(profile).update(_moved(test[0])).reasons
    # commutator parts sit at different places in the good images: no layout check there
    loose = profile_from_images(list_good_images(shared_data / "kolektorsdd" / "commutator" / "train" / "good"))
    assert "layout" not in loose.stats and loose.reference == ()


def test_profile_round_trips_and_other_image_size_is_flagged(shared_data, tmp_path):
    from edge_runtime.input_alarm import PROFILE_FILE

    profile = profile_from_images(list_good_images(shared_data / "mvtec_ad" / "bottle" / "train" / "good")[:6])
    (tmp_path / PROFILE_FILE).write_text(profile.to_json(), encoding="utf-8")
    back = load_profile(tmp_path / PROFILE_FILE)
    assert back.stats == profile.stats and back.image_shape == profile.image_shape
    assert np.allclose(back.reference, profile.reference, atol=1e-6)
    img = read_rgb(list_good_images(shared_data / "mvtec_ad" / "bottle" / "test" / "good")[0])
    assert "image_size" in InputMonitor(back).update(img[:400]).reasons


def test_bayer_and_mono_frames_and_downscale_first():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rgb[..., 0] //= 2  # less red
    bayer = np.empty((480, 640), np.uint8)  # BayerRG8 mosaic of the same scene
    bayer[0::2, 0::2], bayer[0::2, 1::2] = rgb[0::2, 0::2, 0], rgb[0::2, 1::2, 1]
    bayer[1::2, 0::2], bayer[1::2, 1::2] = rgb[1::2, 0::2, 1], rgb[1::2, 1::2, 2]
    s_rgb, s_bayer = frame_stats(rgb, "RGB8"), frame_stats(bayer, "BayerRG8")
    assert s_rgb["red"] == pytest.approx(0.5, abs=0.05) and s_bayer["red"] == pytest.approx(0.5, abs=0.05)
    assert frame_stats(rgb[..., ::-1].copy(), "BGR8")["red"] == pytest.approx(s_rgb["red"], abs=1e-6)
    mono = frame_stats(rgb[..., 1].copy(), "Mono8")
    assert set(mono) == {"brightness", "contrast", "sharpness"}


def test_bundle_profile_feeds_the_postprocessor_and_status(tiny_bundle, shared_data, tmp_path, capsys):
    from edge_runtime.bundle import load_bundle
    from edge_runtime.postprocess import Postprocessor

    good = shared_data / "mvtec_ad" / "bottle" / "train" / "good"
    out = tmp_path / "b"
    assert main(["profile", "--bundle", str(tiny_bundle), "--images", str(good), "--out", str(out)]) == 0
    bundle = load_bundle(out)
    assert bundle.manifest.input_profile == "input_profile.json"
    assert load_profile(bundle.path("input_profile.json")).n_images == 30
    post = Postprocessor(bundle, {"backend": "ort-cpu", "precision": "fp32"})
    imgs = [read_rgb(p) for p in list_good_images(shared_data / "mvtec_ad" / "bottle" / "test" / "good")[:6]]
    frames = imgs[:3] + [_dark(i) for i in imgs[3:6]]
    verdicts = [
        post(Frame(img, 0, i, "cam0", {"pixel_format": "RGB8"}), 0.1, np.zeros((8, 8), np.float32), {})
        for i, img in enumerate(frames)
    ]
    assert [v["input_alarm"] for v in verdicts] == [False] * 5 + [True]
    fields = post.monitor.status_fields()
    assert fields["input_alarm"] is True and "input_brightness_low" in fields["alarms"]
    assert fields["ok_score_mean"] == pytest.approx(0.1) and fields["ok_score_window"] == 6
    json.dumps(fields, allow_nan=False)


def test_no_profile_means_no_alarm_but_ok_score_mean(tiny_bundle):
    from edge_runtime.bundle import load_bundle

    mon = StationMonitor.for_bundle(load_bundle(tiny_bundle), ok_window=2)
    assert mon.observe_frame(np.zeros((64, 64, 3), np.uint8)) is False
    for v in (
        {"verdict": "OK", "score": 0.1},
        {"verdict": "NG", "score": 0.9},
        {"verdict": "OK", "score": 0.2},
        {"verdict": "OK", "score": 0.4},
    ):
        mon.observe_verdict(v)
    assert mon.ok_score_mean == pytest.approx(0.3)  # window of 2 OK scores; NG ignored
    with pytest.raises(ConfigError):
        StationMonitor(None, ok_window=0)


@pytest.mark.broker
def test_status_topic_carries_the_alarm(mqtt_broker: Any, mqtt_subscriber: Any, category):
    from edge_runtime.publish import open_publisher

    profile, test = category
    mon = StationMonitor(profile, raise_after=2)
    for img in [_blur(i) for i in test[:2]]:
        mon.observe_frame(img)
    pub = open_publisher(
        f"{mqtt_broker.uri}/ia", {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "close_timeout_s": 5.0}
    )
    try:
        pub.publish_status(mon.status_fields())
        sub = mqtt_subscriber(mqtt_broker, "ia/status", client_id="ia-late")
        assert sub.wait_for(lambda m: any(json.loads(x.payload).get("input_alarm") for x in m), 10)
        status = json.loads(sub.snapshot()[-1].payload)
        assert "input_sharpness_low" in status["alarms"] and status["state"] == "online"
    finally:
        pub.close()
