"""A tiny CLIP-like vision transformer exported to ONNX that follows the bundle's I/O contract.

It lets the calibration tests run without the training/export packages: `image` uint8 NHWC in,
normalisation inside the graph, Conv patch embedding, pre-LN attention blocks (LayerNorm,
QK^T, Softmax, attn*V, MLP), ln_post, a final projection, cosine similarity with the
`text_embeddings` input, and outputs `score` [N] and `anomaly_map` [N, h, w].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.preprocess import CLIP_MEAN, CLIP_STD

MEAN, STD = CLIP_MEAN, CLIP_STD


def _build_module(image_size: int, patch: int, width: int, layers: int, embed_dim: int):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.ln_1 = nn.LayerNorm(d)
            self.q_proj = nn.Linear(d, d)
            self.k_proj = nn.Linear(d, d)
            self.v_proj = nn.Linear(d, d)
            self.out_proj = nn.Linear(d, d)
            self.ln_2 = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, 4 * d)
            self.fc2 = nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, d = x.shape
            hd = d // self.heads
            h = self.ln_1(x)
            q = self.q_proj(h).view(b, t, self.heads, hd).transpose(1, 2)
            k = self.k_proj(h).view(b, t, self.heads, hd).transpose(1, 2)
            v = self.v_proj(h).view(b, t, self.heads, hd).transpose(1, 2)
            attn = torch.softmax((q @ k.transpose(-1, -2)) * hd**-0.5, dim=-1)
            x = x + self.out_proj((attn @ v).transpose(1, 2).reshape(b, t, d))
            return x + self.fc2(nn.functional.gelu(self.fc1(self.ln_2(x))))

    class TinyAnomalyViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.grid = image_size // patch
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
            self.patch_embed = nn.Conv2d(3, width, patch, patch, bias=False)
            self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.1)
            self.pos = nn.Parameter(torch.randn(1, self.grid * self.grid + 1, width) * 0.1)
            self.ln_pre = nn.LayerNorm(width)
            self.blocks = nn.ModuleList(Block(width, 2) for _ in range(layers))
            self.ln_post = nn.LayerNorm(width)
            self.visual_projection = nn.Linear(width, embed_dim, bias=False)

        def forward(self, image, text_embeddings):
            x = image.permute(0, 3, 1, 2).float() / 255.0
            x = (x - self.mean) / self.std
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            x = self.ln_pre(x)
            for blk in self.blocks:
                x = blk(x)
            feats = self.visual_projection(self.ln_post(x))
            feats = feats / feats.norm(dim=-1, keepdim=True)
            logits = 4.0 * feats @ text_embeddings.t()
            probs = torch.softmax(logits, dim=-1)[..., 1]
            amap = probs[:, 1:].reshape(-1, self.grid, self.grid)
            score = 0.5 * (probs[:, 0] + amap.flatten(1).amax(dim=1))
            return score, amap

    return TinyAnomalyViT()


def write_contract_bundle(
    out_dir: str | Path,
    *,
    image_size: int = 32,
    patch: int = 8,
    width: int = 32,
    layers: int = 2,
    embed_dim: int = 16,
    seed: int = 0,
    threshold: float = 0.5,
) -> Path:
    """Export the tiny model and write a complete, hash-verified bundle into `out_dir`."""
    import torch

    from edge_runtime.bundle import PreprocessSpec, TensorSpec, Threshold
    from tests.plugins.edge import write_test_manifest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = _build_module(image_size, patch, width, layers, embed_dim).eval()
    text = torch.nn.functional.normalize(torch.randn(2, embed_dim), dim=-1)
    image = torch.randint(0, 256, (1, image_size, image_size, 3), dtype=torch.uint8)
    torch.onnx.export(
        model,
        (image, text),
        str(out / "model.onnx"),
        dynamo=False,
        opset_version=17,
        input_names=["image", "text_embeddings"],
        output_names=["score", "anomaly_map"],
        dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}, "anomaly_map": {0: "batch"}},
    )
    np.save(out / "text_embeddings.npy", text.numpy().astype(np.float32), allow_pickle=False)
    grid = image_size // patch
    write_test_manifest(
        out,
        model_id="test-contract-vit",
        clip_source="random",
        preprocess=PreprocessSpec(image_size=(image_size, image_size), mean=MEAN, std=STD),
        inputs=(
            TensorSpec("image", ("batch", image_size, image_size, 3), "uint8"),
            TensorSpec("text_embeddings", (2, embed_dim), "float32"),
        ),
        outputs=(
            TensorSpec("score", ("batch",), "float32"),
            TensorSpec("anomaly_map", ("batch", grid, grid), "float32"),
        ),
        threshold=Threshold(value=threshold, method="fixed for tests"),
        prompts={"normal": "a photo of a flawless object", "abnormal": "a photo of a damaged object"},
    )
    return out
