"""Fixtures for the model area (owner H1): a random tiny CLIP folder and a merged tiny
AnomalyCLIP whose LoRA and head weights are random and NON-ZERO, so merge/export parity
tests compare something real. Built once per session in a temp folder (about 2 s)."""

from __future__ import annotations

from pathlib import Path

import pytest


def build_tiny_model(clip_dir: Path, seed: int = 0, **model_overrides):
    """A tiny AnomalyCLIP with LoRA on both towers; LoRA A/B, context tokens and adapters
    set to random non-zero values. Returns (model in eval mode, LoadedClip)."""
    import torch

    from train.clip_loading import load_clip
    from train.config import LoraSettings, ModelConfig
    from train.model import build_model, set_lora_random

    loaded = load_clip(clip_dir)
    model = build_model(
        loaded.model, loaded.tokenizer, ModelConfig(**model_overrides), LoraSettings(rank=4), loaded.image_size
    )
    set_lora_random(model, std=0.05, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.head.parameters():
            if p.ndim:  # context tokens and adapters; keep the temperature as CLIP had it
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval(), loaded


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny CLIP in Hugging Face format (64 px, patch 8, 4+4 layers)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from train.clip_presets import make_clip_folder

    return make_clip_folder(tmp_path_factory.mktemp("tiny_clip") / "clip", arch="tiny", seed=0)


@pytest.fixture(scope="session")
def merged_tiny_dir(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A merged tiny AnomalyCLIP folder (load with `train.merged.load_merged`); its LoRA
    weights were random and non-zero before the merge. Threshold: the 0.5 default."""
    pytest.importorskip("peft")
    import torch

    from train.merged import save_merged

    torch.manual_seed(0)
    model, loaded = build_tiny_model(tiny_clip_dir, seed=0)
    out = tmp_path_factory.mktemp("merged_tiny") / "merged"
    save_merged(model, out, clip_source=str(tiny_clip_dir), mean=loaded.mean, std=loaded.std, name="tiny-test")
    return out
