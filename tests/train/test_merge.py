"""Merging LoRA into CLIP keeps the scores; the merged folder round-trips."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from edge_runtime.errors import DataError  # noqa: E402
from tests.plugins.models import build_tiny_model  # noqa: E402
from tests.train.helpers import train_argv  # noqa: E402
from train.merged import HEAD_FILE, MODEL_JSON, load_merged, save_merged  # noqa: E402


def _images(n=4, seed=3):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_merged_scores_equal_adapter_scores(tiny_clip_dir, tmp_path):
    model, loaded = build_tiny_model(tiny_clip_dir, seed=5)
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n)
    x = _images()
    with torch.no_grad():
        ref = model.predict(x)
    info = save_merged(
        model, tmp_path / "m", clip_source=str(tiny_clip_dir), mean=loaded.mean, std=loaded.std, name="run1"
    )
    merged, info2 = load_merged(tmp_path / "m")
    assert info2 == info
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        out = merged.predict(x)
    assert (out.score - ref.score).abs().max() <= 1e-5
    assert (out.anomaly_map - ref.anomaly_map).abs().max() <= 1e-5


def test_merged_info_roundtrip_and_defaults(merged_tiny_dir):
    model, info = load_merged(merged_tiny_dir)
    assert not model.training
    assert info.threshold == 0.5 and info.threshold_method == "default: no eval run"
    assert info.image_size == (64, 64) and info.grid == (8, 8) and info.feature_layers == (1, 2, 3, 4)
    assert info.model_id.startswith("tiny-test-") and len(info.model_id) == len("tiny-test-") + 8
    assert info.prompts == ("a photo of a flawless object", "a photo of a damaged object")
    assert (merged_tiny_dir / "model.safetensors").is_file() and (merged_tiny_dir / HEAD_FILE).is_file()
    assert not list(merged_tiny_dir.glob("*.bin")) and not list(merged_tiny_dir.glob("*.pt"))
    emb = model.text_embeddings()
    assert emb.shape == (2, info.embed_dim)


def test_model_id_depends_on_weights(tiny_clip_dir, tmp_path):
    ids = []
    for seed in (1, 2):
        model, loaded = build_tiny_model(tiny_clip_dir, seed=seed)
        ids.append(save_merged(model, tmp_path / str(seed), clip_source="x", mean=loaded.mean, std=loaded.std).model_id)
    assert ids[0] != ids[1]


def test_load_merged_rejects_non_merged_and_newer_format(tiny_clip_dir, merged_tiny_dir, tmp_path):
    with pytest.raises(DataError, match=MODEL_JSON):
        load_merged(tiny_clip_dir)
    import shutil

    copy = tmp_path / "newer"
    shutil.copytree(merged_tiny_dir, copy)
    doc = json.loads((copy / MODEL_JSON).read_text())
    doc["format_version"] = 99
    (copy / MODEL_JSON).write_text(json.dumps(doc))
    with pytest.raises(DataError, match="newer"):
        load_merged(copy)


@pytest.fixture(scope="module")
def trained_run(tiny_clip_dir, tmp_path_factory):
    from edge_runtime.cli import main
    from train.synth import SynthSpec, make_synthetic_dataset

    root = tmp_path_factory.mktemp("merge_run")
    make_synthetic_dataset(
        root / "data", SynthSpec(seed=0, categories=1, size=64, train_good=2, per_class=1), progress=False
    )
    run = root / "run"
    extra = ("--epochs", "2", "--no-progress", "--set", "optim.threads=1", "--set", "optim.lr=0.01")
    assert main(train_argv(root / "data", tiny_clip_dir, run, *extra, quick=False)) == 0
    return run


def test_merge_command_matches_run_scores_and_reads_threshold(trained_run, tmp_path, capsys):
    from edge_runtime.cli import main
    from train.run_state import best_epoch, load_run_model

    assert main(["merge", "--run", str(trained_run), "--out", str(tmp_path / "m1")]) == 0
    assert "default: no eval run" in capsys.readouterr().out
    best = best_epoch(trained_run)  # without --epoch: the best on validation
    assert best in (1, 2)
    run_model, run_info = load_run_model(trained_run, best)
    merged, info = load_merged(tmp_path / "m1")
    assert info.epoch == best and info.model_id.startswith("run-") and info.clip_source == run_info.clip_source
    x = _images(3)
    with torch.no_grad():
        ref, out = run_model.predict(x), merged.predict(x)
    assert (out.score - ref.score).abs().max() <= 1e-5

    from train.evaluate import write_threshold
    from train.run_state import epoch_sha256, read_run_record

    other = 3 - best
    write_threshold(
        trained_run,
        {
            "value": 0.6125,
            "method": "f1-max on val",
            "epoch": other,
            "epoch_sha256": epoch_sha256(trained_run, other),
            "run_id": read_run_record(trained_run)["run_id"],
        },
    )
    try:
        assert main(["merge", "--run", str(trained_run), "--out", str(tmp_path / "m2")]) == 0
    finally:
        (trained_run / "threshold.json").unlink()
    _, info2 = load_merged(tmp_path / "m2")
    assert (info2.threshold, info2.threshold_method, info2.epoch) == (0.6125, "f1-max on val", other)
    assert (
        info2.threshold_lineage["epoch"] == other and info2.lineage["run_id"] == read_run_record(trained_run)["run_id"]
    )
    assert info2.model_id != info.model_id


def test_merge_unknown_epoch_and_missing_run_exit_2(trained_run, tmp_path, capsys):
    from edge_runtime.cli import main

    assert main(["merge", "--run", str(trained_run), "--out", str(tmp_path / "m"), "--epoch", "7"]) == 2
    assert "epoch 7 not saved" in capsys.readouterr().err
    assert main(["merge", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_run_config_edited_after_training_is_data_error(trained_run, tmp_path):
    import shutil

    import yaml

    from train.run_state import load_run_model

    run = tmp_path / "edited"
    shutil.copytree(trained_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["lora"]["rank"] = 2
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(DataError, match="do not fit the model of config.yaml"):
        load_run_model(run)
