"""make_clip_folder writes folders that transformers loads back, offline."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from edge_runtime.cli import main
from edge_runtime.errors import ConfigError, DataError
from train.clip_loading import load_clip
from train.clip_presets import clip_config, make_clip_folder


def test_tiny_folder_loads_with_auto_classes(tiny_clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    tok = AutoTokenizer.from_pretrained(tiny_clip_dir)
    ids = tok(["a photo of a damaged bottle", "a photo of a flawless object"], padding=True)["input_ids"]
    assert ids[0][0] == tok.bos_token_id and tok.eos_token_id in ids[0]
    assert tok.unk_token_id not in ids[0] + ids[1]  # prompt and object words are in the vocabulary
    model = CLIPModel.from_pretrained(tiny_clip_dir, use_safetensors=True)
    assert model.config.vision_config.image_size == 64
    assert model.config.text_config.eos_token_id == tok.eos_token_id != 2
    assert (tiny_clip_dir / "model.safetensors").is_file()
    assert "RANDOM" in (tiny_clip_dir / "README.md").read_text()
    cfg = json.loads((tiny_clip_dir / "config.json").read_text())
    assert cfg["clipinspect_random_test_model"]["arch"] == "tiny"


def test_load_clip_returns_size_and_normalisation(tiny_clip_dir):
    model, tok, size, mean, std = load_clip(tiny_clip_dir)
    assert size == (64, 64)
    assert mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert not model.training


def test_load_clip_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(DataError, match="CLIP folder not found"):
        load_clip(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no config.json"):
        load_clip(tmp_path / "empty")


def test_load_clip_unreachable_hub_id_is_config_error():
    with pytest.raises(ConfigError, match="cannot load CLIP 'nobody-here/no-such-clip'"):
        load_clip("nobody-here/no-such-clip", local_only=True)


@pytest.mark.parametrize(
    "arch,size,patch,vis_layers,vis_width,text_width,proj",
    [("vit-b-16", 224, 16, 12, 768, 512, 512), ("vit-l-14-336", 336, 14, 24, 1024, 768, 768)],
)
def test_real_arch_configs_match_openai(arch, size, patch, vis_layers, vis_width, text_width, proj):
    cfg = clip_config(arch)
    v, t = cfg.vision_config, cfg.text_config
    assert (v.image_size, v.patch_size, v.num_hidden_layers, v.hidden_size) == (size, patch, vis_layers, vis_width)
    assert (t.hidden_size, t.num_hidden_layers, t.max_position_embeddings, t.vocab_size) == (text_width, 12, 77, 49408)
    assert cfg.projection_dim == proj and v.hidden_act == "quick_gelu"


def test_unknown_arch_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown CLIP arch 'vit-h'"):
        make_clip_folder(tmp_path, arch="vit-h")


def test_make_tiny_clip_command(tmp_path, capsys):
    out = tmp_path / "clip"
    assert main(["make-tiny-clip", str(out), "--seed", "3"]) == 0
    assert out.name in capsys.readouterr().out
    assert load_clip(out).image_size == (64, 64)
    assert main(["make-tiny-clip", str(tmp_path / "x"), "--arch", "vit-h"]) == 2
    assert "unknown CLIP arch" in capsys.readouterr().err


def test_bare_missing_name_is_folder_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="CLIP folder not found: clip"):
        load_clip("clip")
