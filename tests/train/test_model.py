"""AnomalyCLIP: text side equals CLIP's own, LoRA lands only where asked, scores are sane."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from edge_runtime.errors import ConfigError  # noqa: E402
from train.clip_loading import load_clip  # noqa: E402
from train.config import LoraSettings, ModelConfig  # noqa: E402
from train.model import (  # noqa: E402
    AnomalyCLIP,
    build_model,
    default_feature_layers,
    lora_module_names,
    parameter_summary,
    set_lora_random,
)


@pytest.fixture()
def loaded(tiny_clip_dir):
    torch.manual_seed(0)
    return load_clip(tiny_clip_dir)


def test_text_embeddings_without_context_equal_clip_text_features(loaded):
    model = AnomalyCLIP(loaded.model, loaded.tokenizer, ModelConfig(n_ctx=0))
    ours = model.text_embeddings()
    enc = loaded.tokenizer(list(model.config.prompts), padding=True, return_tensors="pt")
    ref = torch.nn.functional.normalize(loaded.model.get_text_features(**enc).pooler_output, dim=-1)
    assert ours.shape == (2, 32)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(2))


def test_context_tokens_change_the_text_embeddings(loaded):
    model = AnomalyCLIP(loaded.model, loaded.tokenizer, ModelConfig(n_ctx=3))
    before = model.text_embeddings().detach().clone()
    with torch.no_grad():
        model.head.ctx.add_(torch.randn(model.head.ctx.shape, generator=torch.Generator().manual_seed(0)))
    assert (model.text_embeddings() - before).abs().max() > 1e-3


def test_forward_shapes_and_score_definition(loaded):
    model = AnomalyCLIP(loaded.model, loaded.tokenizer, ModelConfig(feature_layers=(2, 4))).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = model(x, model.text_embeddings())
    assert out.score.shape == (3,) and out.anomaly_map.shape == (3, 8, 8)
    assert out.patch_logits.shape == (3, 2, 8, 8, 2) and out.global_logits.shape == (3, 2)
    assert float(out.anomaly_map.min()) >= 0 and float(out.anomaly_map.max()) <= 1
    p_global = out.global_logits.softmax(-1)[:, 1]
    expected = 0.5 * (p_global + out.anomaly_map.flatten(1).max(dim=1).values)
    assert torch.allclose(out.score, expected)
    # the map is the mean of the per-layer probabilities
    assert torch.allclose(out.anomaly_map, out.patch_logits.softmax(-1)[..., 1].mean(1))


def test_default_feature_layers_spread_over_depth():
    assert default_feature_layers(24) == (6, 12, 18, 24)
    assert default_feature_layers(12) == (3, 6, 9, 12)
    assert default_feature_layers(4) == (1, 2, 3, 4)


def test_feature_layer_beyond_depth_is_config_error(loaded):
    with pytest.raises(ConfigError, match="feature_layers"):
        AnomalyCLIP(loaded.model, loaded.tokenizer, ModelConfig(feature_layers=(2, 9)))


def test_prompt_too_long_is_config_error(loaded):
    with pytest.raises(ConfigError, match="text positions"):
        AnomalyCLIP(loaded.model, loaded.tokenizer, ModelConfig(n_ctx=30))


def test_lora_only_on_requested_modules(loaded):
    model = build_model(
        loaded.model,
        loaded.tokenizer,
        ModelConfig(),
        LoraSettings(towers=("vision",), modules=("q_proj", "v_proj"), layers=(1, 3)),
    )
    assert lora_module_names(model) == [
        f"vision_model.encoder.layers.{i}.self_attn.{m}" for i in (1, 3) for m in ("q_proj", "v_proj")
    ]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n or n.startswith("head.") for n in trainable)
    assert any(".lora_" in n for n in trainable)


def test_lora_on_both_towers_all_layers_by_default(loaded):
    model = build_model(loaded.model, loaded.tokenizer, ModelConfig(), LoraSettings())
    names = lora_module_names(model)
    assert len(names) == 2 * 4 * 4  # towers x layers x q,k,v,out
    assert any(n.startswith("text_model.") for n in names)


def test_lora_layer_out_of_range_is_config_error(loaded):
    with pytest.raises(ConfigError, match="lora.layers: layer 7"):
        build_model(loaded.model, loaded.tokenizer, ModelConfig(), LoraSettings(layers=(0, 7)))


def test_trainable_percentage_reported(loaded, caplog):
    from train.model import log_parameters

    model = build_model(loaded.model, loaded.tokenizer, ModelConfig(), LoraSettings(rank=2))
    trainable, total, pct = parameter_summary(model)
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    head = sum(p.numel() for p in model.head.parameters() if p.requires_grad)
    assert trainable == lora + head
    assert total == sum(p.numel() for p in model.parameters())
    assert pct == pytest.approx(100 * trainable / total)
    with caplog.at_level("INFO"):
        line = log_parameters(model)
    assert f"{trainable:,}" in line and f"({pct:.3f}%)" in caplog.text


def test_random_lora_changes_scores(loaded):
    model = build_model(loaded.model, loaded.tokenizer, ModelConfig(), LoraSettings()).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.predict(x).score
        set_lora_random(model)
        after = model.predict(x).score
    assert (before - after).abs().max() > 1e-4


def test_forward_traces_to_onnx_with_dynamic_batch(merged_tiny_dir, tmp_path):
    """No data-dependent control flow: a graph traced at batch 2 gives the same scores at batch 3."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from train.merged import load_merged

    model, _ = load_merged(merged_tiny_dir)

    class Scores(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values, text_embeddings):
            out = self.m(pixel_values, text_embeddings)
            return out.score, out.anomaly_map

    text = model.text_embeddings().detach()
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        Scores(model).eval(),
        (torch.randn(2, 3, 64, 64), text),
        str(path),
        dynamo=False,
        input_names=["pixel_values", "text_embeddings"],
        output_names=["score", "anomaly_map"],
        dynamic_axes={"pixel_values": {0: "batch"}},
        opset_version=17,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    score, amap = sess.run(None, {"pixel_values": x.numpy(), "text_embeddings": text.numpy()})
    with torch.no_grad():
        ref = model(x, text)
    assert score.shape == (3,) and amap.shape == (3, 8, 8)
    assert abs(score - ref.score.numpy()).max() < 1e-5
    assert abs(amap - ref.anomaly_map.numpy()).max() < 1e-5
