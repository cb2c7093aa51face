"""Training loop: learns, resumes exactly, saves what eval/merge need, fails clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from edge_runtime.cli import main  # noqa: E402
from tests.train.helpers import synth_data, train_argv  # noqa: E402
from train.synth import SynthSpec, make_synthetic_dataset  # noqa: E402


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """2 synthetic categories, 64 px, 24 images."""
    return synth_data(tmp_path_factory.mktemp("synth_small") / "data", categories=2)


def _train_args(data, clip, out, *extra):
    return train_argv(data, clip, out, "--set", "data.max_images=8", *extra)


@pytest.fixture(scope="module")
def one_epoch_run(small_data, tiny_clip_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run1"
    assert main(_train_args(small_data, tiny_clip_dir, run, "--epochs", "1")) == 0
    return run


def test_run_folder_layout(one_epoch_run, tiny_clip_dir):
    run = one_epoch_run
    ep = run / "adapters" / "epoch_001"
    for name in ("adapter_model.safetensors", "adapter_config.json", "head.safetensors", "optimizer.pt", "state.json"):
        assert (ep / name).is_file(), name
    assert not list(ep.glob("*.bin"))
    # the optimizer state is tensors and plain values only: loadable with weights_only=True
    state = torch.load(ep / "optimizer.pt", weights_only=True)
    assert state["optimizer"]["state"]
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["clip"] == str(tiny_clip_dir.resolve()) and cfg["optim"]["epochs"] == 1
    assert "trainable parameters" in (run / "train.log").read_text()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1] and np.isfinite(lines[0]["loss"]) and lines[0]["device"] == "cpu"
    assert cfg["optim"]["amp"] is True and lines[0]["amp"] is False  # AMP is CUDA-only, and the log says so


def test_resume_continues_and_matches_uninterrupted_run(one_epoch_run, small_data, tiny_clip_dir, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(one_epoch_run, resumed)
    assert (
        main(["train", "--data", str(small_data), "--out", str(resumed), "--resume", "--epochs", "2", "--no-progress"])
        == 0
    )
    lines = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    straight = tmp_path / "straight"
    assert main(_train_args(small_data, tiny_clip_dir, straight, "--epochs", "2")) == 0
    from safetensors.torch import load_file

    a = load_file(str(resumed / "adapters/epoch_002/adapter_model.safetensors"))
    b = load_file(str(straight / "adapters/epoch_002/adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    first = load_file(str(resumed / "adapters/epoch_001/adapter_model.safetensors"))
    assert max(float((a[k] - first[k]).abs().max()) for k in a) > 0  # epoch 2 really trained


def test_existing_run_without_resume_is_refused(one_epoch_run, small_data, tiny_clip_dir, capsys):
    assert main(_train_args(small_data, tiny_clip_dir, one_epoch_run, "--epochs", "2")) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_of_missing_run_exits_2(small_data, tmp_path, capsys):
    assert main(["train", "--data", str(small_data), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_bad_config_key_exits_2_naming_it(small_data, tiny_clip_dir, tmp_path, capsys):
    assert main(_train_args(small_data, tiny_clip_dir, tmp_path / "r", "--set", "optim.lrr=0.1")) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "did you mean 'lr'" in err and "Traceback" not in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lora:\n  rank: 4\n  towerz: [vision]\n")
    assert main(_train_args(small_data, tiny_clip_dir, tmp_path / "r", "--config", str(cfg))) == 2
    assert "lora.towerz" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_fails_clearly(small_data, tiny_clip_dir, tmp_path, capsys):
    assert main(_train_args(small_data, tiny_clip_dir, tmp_path / "r", "--device", "cuda")) == 2
    err = capsys.readouterr().err
    assert "cuda" in err and "no CUDA GPU" in err
    assert not (tmp_path / "r").exists()


def test_missing_clip_and_data_are_one_line_errors(small_data, tmp_path, capsys):
    assert main(_train_args(small_data, tmp_path / "noclip", tmp_path / "r")) == 2
    assert "CLIP folder not found" in capsys.readouterr().err
    assert main(["train", "--data", str(small_data), "--out", str(tmp_path / "r")]) == 2
    assert "--clip is required" in capsys.readouterr().err


def test_image_level_csv_trains_without_masks(small_data, tiny_clip_dir, tmp_path):
    """CSV image_id,label,description: no pixel truth, so only the image loss is used."""
    rows = ["image_id,label,description"]
    for p in sorted((small_data / "wood" / "test").glob("*/*.png")):
        rel = p.relative_to(small_data / "wood")
        rows.append(f"{rel},{'good' if p.parent.name == 'good' else 'defect'},{p.parent.name}")
    csv = small_data / "wood" / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    run = tmp_path / "csvrun"
    assert main(_train_args(csv, tiny_clip_dir, run, "--epochs", "1")) == 2  # no split column: refused
    assert main(_train_args(csv, tiny_clip_dir, run, "--epochs", "1", "--set", "data.unsplit=seeded")) == 0
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["loss_focal"] == 0.0 and rec["loss_dice"] == 0.0 and rec["loss_image"] > 0
    assert rec["loss"] == pytest.approx(rec["loss_image"])


@pytest.mark.slow
def test_training_lowers_loss_and_raises_auroc_on_held_out_images(tiny_clip_dir, tmp_path):
    """Train on synthetic seed 0; held-out images are a different draw (seed 1)."""
    from sklearn.metrics import roc_auc_score

    from train.data import AnomalyDataset, load_samples
    from train.run_state import build_run_model, load_run_model
    from train.trainer import resolve_config, train

    spec = dict(categories=4, size=64, train_good=8, per_class=4)
    make_synthetic_dataset(tmp_path / "train", SynthSpec(seed=0, **spec), progress=False)
    make_synthetic_dataset(tmp_path / "held", SynthSpec(seed=1, **spec), progress=False)
    held = load_samples(tmp_path / "held", splits=("test",))
    labels = [s.label for s in held]
    cfg = resolve_config(None, ["optim.threads=1", "optim.epochs=3"], clip=str(tiny_clip_dir))

    def auroc(model, loaded) -> float:
        ds = AnomalyDataset(held, loaded.image_size, loaded.mean, loaded.std)
        batch = torch.stack([ds[i]["pixel_values"] for i in range(len(ds))])
        with torch.no_grad():
            return roc_auc_score(labels, model.eval().predict(batch).score.numpy())

    before_model, loaded = build_run_model(cfg)
    before = auroc(before_model, loaded)
    result = train(tmp_path / "train", tmp_path / "run", cfg, progress=False)
    losses = [r["loss"] for r in result.epochs]
    assert losses[-1] < losses[0]
    after_model, _ = load_run_model(tmp_path / "run")
    after = auroc(after_model, loaded)
    assert after > before + 0.05, (before, after)


def test_holdout_and_categories_select_training_images(small_data):
    from edge_runtime.errors import ConfigError, DataError
    from train.trainer import resolve_config, training_samples

    cfg = resolve_config(None, [], clip="x", holdout=["wood"])
    cats = {s.category for s in training_samples(cfg, small_data)}
    assert cats == {"metal"}
    cfg = resolve_config(None, [], clip="x", categories=["wood"])
    samples = training_samples(cfg, small_data)
    assert {s.category for s in samples} == {"wood"} and {s.split for s in samples} == {"train", "test"}
    with pytest.raises(DataError, match="holdout category 'cork'"):
        training_samples(resolve_config(None, [], clip="x", holdout=["cork"]), small_data)
    with pytest.raises(ConfigError, match="both name 'wood'"):
        resolve_config(None, [], clip="x", categories=["wood"], holdout=["wood"])


@pytest.mark.parametrize("name", ["anomalyclip_vit_l14_336.yaml", "vit_b16.yaml", "tiny_smoke.yaml"])
def test_shipped_configs_are_valid(name):
    from pathlib import Path

    from train.trainer import resolve_config

    path = Path(__file__).resolve().parents[2] / "train" / "configs" / name
    cfg = resolve_config(path, [], clip="openai/clip-vit-base-patch16")
    assert cfg.optim.epochs >= 2 and cfg.lora.rank >= 4


@pytest.mark.gpu
def test_cuda_training_with_amp(small_data, tiny_clip_dir, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from train.run_state import load_run_model

    run = tmp_path / "gpu"
    assert main(_train_args(small_data, tiny_clip_dir, run, "--epochs", "1", "--device", "cuda")) == 0
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["device"] == "cuda" and rec["amp"] is True and np.isfinite(rec["loss"])
    model, _ = load_run_model(run, device="cpu")  # a GPU run loads on a CPU machine
    with torch.no_grad():
        assert torch.isfinite(model.predict(torch.zeros(1, 3, 64, 64)).score).all()
