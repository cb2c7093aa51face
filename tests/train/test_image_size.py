"""Input sizes above the CLIP's own (AnomalyCLIP trains at 336/448/518): the position embedding
is interpolated once at load, and the enlarged model goes through train, eval, merge, export and
device parity like any other. The tiny CLIP is 64 px, patch 8; these tests use 96 px (12x12)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from edge_runtime.cli import main  # noqa: E402
from edge_runtime.errors import ConfigError  # noqa: E402
from tests.train.helpers import synth_data, train_argv  # noqa: E402
from train.clip_loading import load_clip, resize_position_embedding  # noqa: E402

SIZE = 96


def test_resized_table_equals_transformers_interpolation(tiny_clip_dir):
    native = load_clip(tiny_clip_dir)
    big = load_clip(tiny_clip_dir, image_size=SIZE)
    assert big.image_size == (SIZE, SIZE) and big.model.config.vision_config.image_size == SIZE
    emb = big.model.vision_model.embeddings
    assert emb.position_embedding.weight.shape == ((SIZE // 8) ** 2 + 1, 64)
    assert big.model.config.clipinspect_position_interpolation["from_image_size"] == 64
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = native.model.vision_model(x, interpolate_pos_encoding=True).last_hidden_state
        ours = big.model.vision_model(x).last_hidden_state
    assert float((ref - ours).abs().max()) <= 1e-6
    # the CLS position is kept; the patch table really changed size and values
    assert torch.equal(
        emb.position_embedding.weight[0], native.model.vision_model.embeddings.position_embedding.weight[0]
    )
    # resizing to the size it already has is a no-op
    assert resize_position_embedding(big.model, SIZE) is False


@pytest.mark.parametrize("size, hint", [(100, "use 96 or 104"), (4, "smaller than the patch size")])
def test_size_off_the_patch_grid_is_refused(tiny_clip_dir, size, hint):
    with pytest.raises(ConfigError, match=hint):
        load_clip(tiny_clip_dir, image_size=size)


def test_train_cli_rejects_bad_size_in_one_line(tiny_clip_dir, tmp_path, capsys):
    data = tmp_path / "nodata"
    data.mkdir()
    rc = main(train_argv(tmp_path, tiny_clip_dir, tmp_path / "r", "--image-size", "0", "--no-progress", quick=False))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "model.image_size" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_train_eval_merge_export_parity_above_native_size(tiny_clip_dir, tmp_path, capsys):
    from edge_runtime.backends import make_backend
    from edge_runtime.bundle import load_bundle
    from edge_runtime.file_input import image_input
    from train.data import load_samples
    from train.merged import load_merged, read_merged_info
    from train.run_state import load_run_model

    torch.set_num_threads(1)
    data = synth_data(tmp_path / "data", size=SIZE, train_good=2)
    run, merged, bundle_dir = tmp_path / "run", tmp_path / "merged", tmp_path / "bundle"
    assert (
        main(
            train_argv(
                data, tiny_clip_dir, run, "--epochs", "1", "--image-size", str(SIZE), "--set", "data.max_images=4"
            )
        )
        == 0
    )
    assert "image_size: 96" in (run / "config.yaml").read_text()
    assert main(["eval", "--run", str(run), "--data", str(data), "--heatmaps", "0", "--device", "cpu"]) == 0
    assert main(["merge", "--run", str(run), "--out", str(merged)]) == 0
    info = read_merged_info(merged)
    assert info.image_size == (SIZE, SIZE) and info.grid == (12, 12)
    # the merged folder is a plain HF CLIP of the new size: it reloads without interpolating again
    assert json.loads((merged / "config.json").read_text())["vision_config"]["image_size"] == SIZE
    assert main(["export", "--merged", str(merged), "--out", str(bundle_dir)]) == 0
    bundle = load_bundle(bundle_dir)
    assert tuple(bundle.manifest.preprocess.image_size) == (SIZE, SIZE)
    capsys.readouterr()

    # device score (ORT on the bundle, device preprocessing) == training-side score (adapters, torch)
    samples = load_samples(data, splits=("test",))
    model, _ = load_run_model(run)
    merged_model, _ = load_merged(merged)
    runner = make_backend("ort-cpu", intra_op_threads=1)
    runner.load(bundle, "fp32")
    pre = bundle.manifest.preprocess
    dev, train_side, merged_side = [], [], []
    from edge_runtime.preprocess import normalize

    with torch.no_grad():
        for s in samples:
            u8 = image_input(s.image_path, pre)
            assert u8.shape == (SIZE, SIZE, 3)
            dev.append(runner.infer(u8[None]))
            x = torch.from_numpy(normalize(u8[None], pre.mean, pre.std))
            train_side.append(model.predict(x))
            merged_side.append(merged_model.predict(x))
    d = np.array([float(o.score[0]) for o in dev])
    t = np.array([float(o.score[0]) for o in train_side])
    m = np.array([float(o.score[0]) for o in merged_side])
    assert dev[0].anomaly_map.shape == (1, 12, 12)
    assert np.abs(d - m).max() <= 1e-4 and np.abs(d - t).max() <= 1e-4
    for o, r in zip(dev, merged_side):
        np.testing.assert_allclose(o.anomaly_map, r.anomaly_map.numpy(), atol=1e-4)
    assert np.ptp(d) > 1e-6  # not vacuous: different images, different scores
    assert (
        main(
            [
                "-q",
                "verify-bundle",
                "--bundle",
                str(bundle_dir),
                "--images",
                str(data),
                "--backend",
                "torch",
                "--max-images",
                "4",
            ]
        )
        == 0
    )

    # INT8 selection on the enlarged graph: attention (QK^T, attn*V) stays float in every layer,
    # which is what keeps TensorRT's attention in FP16 above its 512-token INT8 MHA limit
    import onnx

    from calibration.qdq import QuantConfig, select_nodes

    graph = onnx.load(str(bundle.model_path("fp32")))
    selection = select_nodes(graph, QuantConfig())
    attention = [n for n, why in selection.excluded.items() if why == "activation x activation"]
    assert len(attention) >= 2 * 4 and selection.quantize
    by_name = {n.name: n for n in graph.graph.node}
    assert all(by_name[n].op_type in ("MatMul", "Gemm") for n in selection.quantize)


@pytest.mark.gpu
def test_cuda_amp_training_above_native_size(tiny_clip_dir, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from train.run_state import load_run_model

    data = synth_data(tmp_path / "data", size=SIZE, train_good=2)
    run = tmp_path / "run"
    extra = (
        "--epochs",
        "1",
        "--image-size",
        str(SIZE),
        "--device",
        "cuda",
        "--no-progress",
        "--set",
        "optim.batch_size=4",
    )
    assert main(train_argv(data, tiny_clip_dir, run, *extra, quick=False)) == 0
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["amp"] is True and np.isfinite(rec["loss"])
    model, info = load_run_model(run, device="cpu")
    assert info.image_size == (SIZE, SIZE)
    with torch.no_grad():
        assert torch.isfinite(model.predict(torch.zeros(1, 3, SIZE, SIZE)).score).all()
