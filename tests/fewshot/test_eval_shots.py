"""`clipinspect eval --shots K` end to end on a tiny run and the real bottle images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime.cli import main


@pytest.fixture(scope="module")
def tiny_run(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from edge_runtime.config import save_config
    from train.config import LoraSettings, TrainConfig
    from train.model import set_lora_random
    from train.run_state import build_run_model, epoch_dir, save_adapters

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("fs_run") / "run"
    run.mkdir()
    cfg = TrainConfig(clip=str(tiny_clip_dir), lora=LoraSettings(rank=4))
    save_config(cfg, run / "config.yaml")
    model, _ = build_run_model(cfg)
    set_lora_random(model, std=0.05, seed=5)
    save_adapters(model, epoch_dir(run, 1))
    return run


def bottle_eval_argv(run: Path, data: Path, *extra: str) -> list[str]:
    """`clipinspect eval` argv for `run` on the category bottle of `data`: CPU, no heatmaps, no threshold; then `extra`."""
    quiet = ("--heatmaps", "0", "--no-threshold", "--device", "cpu")
    return ["eval", "--run", str(run), "--data", str(data), "--categories", "bottle", *quiet, *extra]


@pytest.mark.slow
def test_eval_shots_reports_the_protocol_and_writes_json(tiny_run, mvtec_root, capsys):
    assert main(bottle_eval_argv(tiny_run, mvtec_root, "--shots", "2", "--shot-seeds", "0", "1")) == 0
    out = capsys.readouterr().out
    assert "few-shot K=2, seeds 0, 1" in out and "bottle" in out
    doc = json.loads((tiny_run / "eval" / "fewshot_k2.json").read_text())
    assert doc["shots"] == 2 and doc["seeds"] == [0, 1] and "TRAIN split" in doc["protocol"]
    assert set(doc["banks"]) == {"0", "1"} and all("/train/good/" in f for f in doc["banks"]["0"]["bottle"])
    assert 0.0 <= doc["mean"]["bottle"]["image_auroc"] <= 1.0


def test_eval_shots_user_errors(tiny_run, mvtec_root, capsys):
    base = bottle_eval_argv(tiny_run, mvtec_root)
    assert main(base + ["--shots", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--shots must be >= 1" in err and "Traceback" not in err
