"""Raw-frame training: the run trains through the same FramePreprocess the exported graph
runs (train -> eval -> merge -> export carry the frame), and the bundle scores an image file
as the training side does (FP32 <= 1e-4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from edge_runtime.cli import main  # noqa: E402
from tests.train.helpers import (  # noqa: E402
    ATOL,
    max_weight_diff,
    synth_data,
    train_argv,
    train_single_and_ddp,
)

FRAME = [
    "--set",
    "model.input_format=bayer_rg8",
    "--set",
    "model.input_size=256x160",
    "--set",
    "model.roi=[32,8,192,144]",
]


@pytest.fixture(scope="module")
def raw_data(tmp_path_factory):
    return synth_data(tmp_path_factory.mktemp("raw_synth") / "data")


def _train(data, clip, out, *extra):
    return train_argv(data, clip, out, "--epochs", "1", "--set", "optim.lr=0.01", *extra)


@pytest.fixture(scope="module")
def raw_chain(raw_data, tiny_clip_dir, tmp_path_factory):
    """train (raw frames, augmented before the mosaic) -> eval -> merge -> export (no frame flags)."""
    root = tmp_path_factory.mktemp("raw_chain")
    run, merged, bundle = root / "run", root / "merged", root / "bundle"
    torch.set_num_threads(1)
    assert main(_train(raw_data, tiny_clip_dir, run, *FRAME, "--set", "augment.brightness=0.1")) == 0
    assert main(["eval", "--run", str(run), "--data", str(raw_data), "--heatmaps", "1"]) == 0
    assert main(["merge", "--run", str(run), "--out", str(merged)]) == 0
    assert main(["export", "--merged", str(merged), "--out", str(bundle)]) == 0
    return run, merged, bundle


def test_the_frame_travels_from_config_to_manifest(raw_chain):
    import yaml

    from edge_runtime.bundle import load_bundle

    run, merged, bundle = raw_chain
    cfg = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert (cfg["input_format"], cfg["input_size"], cfg["roi"]) == ("bayer_rg8", "256x160", [32, 8, 192, 144])
    assert "raw-frame training: bayer_rg8 256x160 frames, ROI 32,8,192,144" in (run / "train.log").read_text()
    assert json.loads((merged / "clipinspect_model.json").read_text())["frame"] == {
        "input_format": "bayer_rg8",
        "input_size": [160, 256],
        "roi": [32, 8, 192, 144],
    }
    m = load_bundle(bundle).manifest
    pre = m.preprocess
    assert (pre.input_layout, pre.input_format, pre.input_size, pre.roi) == (
        "frame_uint8",
        "bayer_rg8",
        (160, 256),
        (32, 8, 192, 144),
    )
    assert m.input("image").shape == (1, 160, 256) and m.input("image").dtype == "uint8"
    assert m.threshold.source and "default" not in m.threshold.method  # eval's threshold came through merge
    assert json.loads((run / "eval" / "metrics.json").read_text())["pixel_resolution"] == "model"


def test_bundle_scores_an_image_file_as_the_training_side_does(raw_chain, raw_data):
    """The training side (RawFrameSamples -> RawFrameModel, adapters not merged) vs ONNX
    Runtime on the exported bundle fed the device's frame of the same file."""
    from edge_runtime.backends import make_backend
    from edge_runtime.bundle import load_bundle
    from edge_runtime.file_input import model_input
    from train.frame_module import raw_frame_model, raw_frame_samples
    from train.run_state import default_epoch, load_run_model

    run, _, bundle_dir = raw_chain
    bundle = load_bundle(bundle_dir)
    model, info = load_run_model(run, default_epoch(run, None))
    net = raw_frame_model(model, info.config.model, info.image_size, info.mean, info.std).eval()
    from train.data import load_samples

    samples = load_samples(raw_data, splits=("test",))[:3]
    data = raw_frame_samples(samples, info.config.model, info.image_size, info.mean, info.std)
    ort_b = make_backend("ort-cpu", intra_op_threads=1)
    ort_b.load(bundle, "fp32")
    for i, s in enumerate(samples):
        frames = data[i]["frames"][None]
        with torch.no_grad():
            train_score = float(net(frames, model.text_embeddings()).score[0])
        x = model_input(s.image_path, bundle.manifest.preprocess)
        assert np.array_equal(x[0], frames[0].numpy())  # the same frame from both sides' readers
        assert abs(float(ort_b.infer(x).score[0]) - train_score) <= 1e-4
    # and the bundle's own parity check (torch on the merged model vs ORT, frames from files) passes
    assert main(["verify-bundle", "--bundle", str(bundle_dir), "--images", str(raw_data), "--max-images", "4"]) == 0


def test_export_flags_that_name_another_frame_are_one_line_errors(raw_chain, tmp_path, capsys):
    _, merged, _ = raw_chain
    capsys.readouterr()
    for flags in (
        ["--input-format", "bayer_gb8", "--input-size", "256x160", "--roi", "32,8,192,144"],
        ["--input-format", "bayer_rg8", "--input-size", "256x160"],
    ):
        assert main(["export", "--merged", str(merged), "--out", str(tmp_path / "b"), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert (
            len(err) == 1
            and "was trained on --input-format bayer_rg8 --input-size 256x160 --roi 32,8,192,144" in err[0]
        ), err
    # the same frame spelled out is fine
    assert (
        main(
            [
                "export",
                "--merged",
                str(merged),
                "--out",
                str(tmp_path / "ok"),
                "--input-format",
                "bayer_rg8",
                "--input-size",
                "256x160",
                "--roi",
                "32,8,192,144",
            ]
        )
        == 0
    )


@pytest.mark.parametrize("augment", [None, {"prob": 1.0, "rotation_deg": 40.0, "scale": [1.2, 1.3], "brightness": 0.1}])
def test_masks_follow_the_frame_roi_onto_the_model_grid(tmp_path, augment):
    """A bright square and its mask, seen through a raw frame with an ROI (and rotated, zoomed
    and brightened before the mosaic): the model-size mask covers the square where the graph
    puts it."""
    import cv2

    from edge_runtime.config import from_mapping
    from edge_runtime.preprocess import CLIP_MEAN, CLIP_STD
    from train.augment import set_epoch
    from train.config import AugmentConfig
    from train.data import AnomalyDataset, Sample
    from train.frame_module import FramePreprocess, RawFrameSamples

    img = np.zeros((200, 300, 3), np.uint8)
    img[40:100, 180:260] = 255
    mask = np.zeros((200, 300), np.uint8)
    mask[40:100, 180:260] = 255
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "a_mask.png"), mask)
    s = Sample(tmp_path / "a.png", 1, tmp_path / "a_mask.png", "c", "d", split="train", pixel_gt=True)
    roi = (60, 10, 200, 150)
    aug = from_mapping(AugmentConfig, augment) if augment else None
    ds = RawFrameSamples(
        AnomalyDataset([s], 64, CLIP_MEAN, CLIP_STD), "bayer_rg8", (200, 300), roi=roi, augment=aug, seed=3
    )
    set_epoch(ds, 2)
    item = ds[0]
    if aug is not None:  # a drawn augmentation, different per epoch and repeatable
        assert ds.epoch == 2 and torch.equal(ds[0]["frames"], item["frames"])
        set_epoch(ds, 3)
        assert not torch.equal(ds[0]["frames"], item["frames"])
        set_epoch(ds, 2)
    with torch.no_grad():
        x = FramePreprocess("bayer_rg8", (200, 300), (64, 64), CLIP_MEAN, CLIP_STD, roi=roi)(item["frames"][None])[0]
    grey = (x * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)).mean(0).numpy()
    m = item["mask"].numpy() > 0.5
    bright = grey > 0.5
    assert m.sum() > 100 and (m & bright).sum() / (m | bright).sum() > 0.85  # the mask lies on the square
    if aug is None:
        assert (
            np.abs(ds.image_uint8(0).mean(axis=2) / 255.0 - grey).mean() < 0.05
        )  # heatmap background = what the model saw


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "model.input_format=bayer_rg8"], "go together"),
        (["--set", "model.input_format=bayer_rx8", "--set", "model.input_size=96x64"], "unknown input format"),
        (
            [
                "--set",
                "model.input_format=bayer_rg8",
                "--set",
                "model.input_size=96x64",
                "--set",
                "model.roi=[1,0,8,8]",
            ],
            "even pixels",
        ),
        (["--set", "model.roi=[0,0,8,8]"], "needs model.input_format"),
        ([*FRAME, "--set", "adversarial.fraction=0.5"], "FGSM perturbs the model-size RGB image"),
        (["--set", "model.input_fromat=bayer_rg8"], "unknown config key 'model.input_fromat'"),
    ],
)
def test_bad_frame_config_is_one_line_error(raw_data, tiny_clip_dir, tmp_path, capsys, extra, message):
    assert main(_train(raw_data, tiny_clip_dir, tmp_path / "r", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r").exists()


def test_eval_refuses_attacks_on_raw_frame_runs(raw_chain, raw_data, capsys):
    run, _, _ = raw_chain
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(raw_data), "--fgsm", "0.01", "--no-threshold"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raw camera frames" in err[0], err


def test_eval_shots_on_a_raw_frame_run_is_refused_before_the_zero_shot_eval(raw_chain, raw_data, capsys):
    run, _, _ = raw_chain
    metrics = run / "eval" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(raw_data), "--shots", "1", "--heatmaps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not wired for raw-frame runs" in err[0], err
    assert metrics.stat().st_mtime_ns == before  # nothing evaluated or rewritten first


@pytest.mark.slow
def test_raw_frame_ddp_reaches_the_single_process_weights(raw_data, tiny_clip_dir, tmp_path):
    """`train --nproc 2` with the frame flags: the frame module runs inside the DDP-wrapped
    forward on every rank, and 2 gloo processes reach the single-process adapters."""
    frames = ("--input-format", "bayer_gr8", "--input-size", "160x96", "--roi", "16,0,128,96")
    single, multi = train_single_and_ddp(raw_data, tiny_clip_dir, tmp_path, *frames)
    assert "raw-frame training: bayer_gr8 160x96 frames, ROI 16,0,128,96" in (multi / "train.log").read_text()
    for name in ("adapter_model.safetensors", "head.safetensors"):
        assert max_weight_diff(single / "adapters/epoch_001", multi / "adapters/epoch_001", name) <= ATOL
