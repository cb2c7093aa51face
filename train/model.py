"""AnomalyCLIP-style anomaly detector on a Hugging Face CLIP, with LoRA (PEFT) on attention.

Text side: an object-agnostic prompt pair (normal, abnormal), optionally with `n_ctx`
learnable context tokens inserted after BOS, through the (LoRA-adapted) text tower ->
two L2-normalised embeddings [2, D]. These are computed once per model, outside `forward`,
so the exported graph can take them as an input or bake them in.

Image side: patch tokens of several intermediate vision layers -> post_layernorm -> visual
projection -> optional per-layer linear adapter -> cosine similarity with the two text
embeddings (x temperature) -> softmax -> per-patch P(abnormal). The map is the mean over
layers; the global probability uses the final CLS token. score = 0.5 * (p_global +
max(map)), computed from the patch-grid map so desktop and device agree exactly.

`forward` has no data-dependent Python control flow (loops are over the fixed layer list),
so it traces to ONNX. The learned non-LoRA parameters live in `AnomalyCLIP.head` and are
saved as one safetensors file next to the adapters or the merged CLIP.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from edge_runtime.errors import ConfigError
from train.config import LoraSettings, ModelConfig
from train.prompts import tokenize_prompts

log = logging.getLogger(__name__)

_TOWER_PREFIX = {"vision": "vision_model", "text": "text_model"}


class AnomalyOutput(NamedTuple):
    """A NamedTuple (not a dataclass) so torch.export/ONNX can flatten it."""

    score: torch.Tensor  # [N] in [0, 1]
    anomaly_map: torch.Tensor  # [N, h, w] patch grid, P(abnormal) averaged over layers
    global_logits: torch.Tensor  # [N, 2] (normal, abnormal), for the image loss
    patch_logits: torch.Tensor  # [N, n_layers, h, w, 2], for the pixel losses


def default_feature_layers(depth: int) -> tuple[int, ...]:
    """Four layers spread over the depth, 1-based, ending at the last: 24 -> (6, 12, 18, 24)."""
    return tuple(sorted({max(1, round(depth * k / 4)) for k in range(1, 5)}))


FEWSHOT_WEIGHT = 0.5  # fused map = zero-shot map + w * (few-shot map - zero-shot map): the mean


def fewshot_map(features: torch.Tensor, memory_bank: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """WinCLIP+-style few-shot map [N, h, w]: for each patch and feature layer, 0.5 * (1 - the
    largest cosine similarity to that layer's bank of normal patches), averaged over layers.

    `features` [N, L, P, D] and `memory_bank` [L, M, D] are both L2-normalised (bank rows are
    patch features of good images, as `features` returns them). In [0, 1] like the zero-shot
    map; a bank padded with repeated rows gives the same map (max is unchanged)."""
    bank = memory_bank.to(features.dtype)
    sims = torch.matmul(features, bank.transpose(-1, -2).unsqueeze(0))  # [N, L, P, M]
    dist = 0.5 * (1.0 - sims.amax(dim=-1))  # [N, L, P]
    return dist.mean(dim=1).reshape(-1, grid[0], grid[1])


def fuse_fewshot(
    zero_shot_map: torch.Tensor, p_global: torch.Tensor, fs_map: torch.Tensor, memory_bank: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(score [N], fused map [N, h, w]): the mean of the zero-shot and few-shot maps, and the
    zero-shot score formula on it, 0.5 * (p_global + max(map)).

    An all-zero bank (no enrolment yet) switches the few-shot term off inside the graph:
    zs + 0 * (...) is exactly zs, so one exported graph serves both, without a flag input."""
    enrolled = (memory_bank.abs().amax() > 0).to(zero_shot_map.dtype)
    fused = zero_shot_map + (enrolled * FEWSHOT_WEIGHT) * (fs_map - zero_shot_map)
    score = 0.5 * (p_global + fused.amax(dim=(1, 2)))
    return score, fused


class AnomalyHead(nn.Module):
    """Every learned parameter that is not LoRA: context tokens, adapters, temperature."""

    def __init__(
        self,
        n_ctx: int,
        text_width: int,
        proj_dim: int,
        n_layers: int,
        adapter: bool,
        logit_scale: float,
        learn_temperature: bool,
    ) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        if n_ctx:
            # separate context for the normal and the abnormal prompt, as in AnomalyCLIP
            self.ctx = nn.Parameter(torch.randn(2, n_ctx, text_width) * 0.02)
        self.adapters = nn.ModuleList()
        if adapter:
            for _ in range(n_layers):
                lin = nn.Linear(proj_dim, proj_dim)
                nn.init.eye_(lin.weight)
                nn.init.zeros_(lin.bias)
                self.adapters.append(lin)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)), requires_grad=learn_temperature)


class AnomalyCLIP(nn.Module):
    def __init__(
        self, clip: Any, tokenizer: Any, config: ModelConfig = ModelConfig(), image_size: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        vcfg = clip.config.vision_config
        tcfg = clip.config.text_config
        self.clip = clip
        self.config = config
        size = int(vcfg.image_size)
        self.image_size = tuple(image_size) if image_size else (size, size)
        if self.image_size != (size, size):
            raise ConfigError(f"image size {self.image_size} differs from the CLIP's {size}x{size}")
        self.patch_size = int(vcfg.patch_size)
        self.grid = (size // self.patch_size, size // self.patch_size)
        depth = int(vcfg.num_hidden_layers)
        layers = tuple(config.feature_layers) if config.feature_layers else default_feature_layers(depth)
        if max(layers) > depth:
            raise ConfigError(f"model.feature_layers {list(layers)}: the vision tower has {depth} layers")
        self.feature_layers = layers
        self.embed_dim = int(clip.config.projection_dim)
        ids, eos_pos = tokenize_prompts(tokenizer, config.prompts, config.n_ctx, int(tcfg.max_position_embeddings))
        self.register_buffer("prompt_ids", ids, persistent=False)
        self.register_buffer("eos_pos", eos_pos, persistent=False)
        self.head = AnomalyHead(
            config.n_ctx,
            int(tcfg.hidden_size),
            self.embed_dim,
            len(layers),
            config.adapter,
            float(clip.logit_scale.detach()),
            config.learn_temperature,
        )
        self.peft_model: Any = None  # set by apply_lora; kept out of the module tree on purpose
        self.tokenizer = tokenizer
        for p in self.clip.parameters():
            p.requires_grad_(False)

    # ----- text -------------------------------------------------------------------------
    def text_embeddings(self) -> torch.Tensor:
        """L2-normalised [2, D]: row 0 normal, row 1 abnormal."""
        tm = self.clip.text_model
        tok = tm.embeddings.token_embedding(self.prompt_ids)
        if self.head.n_ctx:
            ctx = self.head.ctx.to(tok.dtype)
            tok = torch.cat([tok[:, :1], ctx, tok[:, 1:]], dim=1)
        length = tok.shape[1]
        positions = torch.arange(length, device=tok.device)
        h = tok + tm.embeddings.position_embedding(positions)[None]
        causal = torch.full((length, length), torch.finfo(h.dtype).min, device=h.device, dtype=h.dtype).triu(1)
        mask = causal[None, None]
        for layer in tm.encoder.layers:
            h = layer(h, mask)
        h = tm.final_layer_norm(h)
        pooled = h[torch.arange(h.shape[0], device=h.device), self.eos_pos]
        return F.normalize(self.clip.text_projection(pooled), dim=-1)

    # ----- image ------------------------------------------------------------------------
    def temperature(self) -> torch.Tensor:
        return self.head.logit_scale.exp().clamp(max=100.0)

    def forward(
        self, pixel_values: torch.Tensor, text_embeddings: torch.Tensor, memory_bank: torch.Tensor | None = None
    ) -> AnomalyOutput:
        return self.forward_features(pixel_values, text_embeddings, memory_bank)[0]

    def patch_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [N, L, P, D]: L2-normalised projected patch tokens of each feature layer, after
        the adapters; h [N, T, W]: the last hidden state, for the global token)."""
        vm = self.clip.vision_model
        h = vm.embeddings(pixel_values)
        h = vm.pre_layrnorm(h)
        feats = []
        for i, layer in enumerate(vm.encoder.layers):
            h = layer(h, None)
            if i + 1 in self.feature_layers:
                feats.append(h)
        zs = []
        for k, feat in enumerate(feats):
            z = self.clip.visual_projection(vm.post_layernorm(feat[:, 1:, :]))
            if len(self.head.adapters):
                z = self.head.adapters[k](z)
            zs.append(F.normalize(z, dim=-1))
        return torch.stack(zs, dim=1), h

    def forward_features(
        self, pixel_values: torch.Tensor, text_embeddings: torch.Tensor, memory_bank: torch.Tensor | None = None
    ) -> tuple[AnomalyOutput, torch.Tensor]:
        """The forward pass, plus the patch features [N, L, P, D] (float32) a few-shot memory
        bank is built from. With `memory_bank` [L, M, D] the map and score are the few-shot
        fusion (`fuse_fewshot`); an all-zero bank gives exactly the zero-shot result."""
        vm = self.clip.vision_model
        z_all, h = self.patch_features(pixel_values)
        scale = self.temperature()
        text = text_embeddings.to(h.dtype)
        gh, gw = self.grid
        layer_logits = []
        for k in range(z_all.shape[1]):
            layer_logits.append((scale * (z_all[:, k] @ text.t())).reshape(-1, gh, gw, 2))
        patch_logits = torch.stack(layer_logits, dim=1).float()  # [N, L, h, w, 2]
        layer_maps = patch_logits.softmax(dim=-1)[..., 1]
        anomaly_map = layer_maps.mean(dim=1)
        g = F.normalize(self.clip.visual_projection(vm.post_layernorm(h[:, 0, :])), dim=-1)
        global_logits = (scale * (g @ text.t())).float()
        p_global = global_logits.softmax(dim=-1)[:, 1]
        feats = z_all.float()
        if memory_bank is not None:
            score, anomaly_map = fuse_fewshot(
                anomaly_map, p_global, fewshot_map(feats, memory_bank, self.grid), memory_bank
            )
        else:
            score = 0.5 * (p_global + anomaly_map.amax(dim=(1, 2)))
        return AnomalyOutput(score, anomaly_map, global_logits, patch_logits), feats

    def predict(self, pixel_values: torch.Tensor) -> AnomalyOutput:
        return self(pixel_values, self.text_embeddings())

    # ----- parameters -------------------------------------------------------------------
    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}


def lora_target_regex(settings: LoraSettings, depths: dict[str, int]) -> str:
    """PEFT `target_modules` regex (full match on module names of a CLIPModel)."""
    towers = [_TOWER_PREFIX[t] for t in dict.fromkeys(settings.towers)]
    if not towers:
        raise ConfigError("lora.towers must name at least one of: vision, text")
    if settings.layers is not None:
        deepest = max(depths[t] for t in settings.towers)
        bad = [i for i in settings.layers if i >= deepest]
        if bad:
            raise ConfigError(f"lora.layers: layer {bad[0]} does not exist (towers have {deepest} layers, 0-based)")
        layers = "|".join(str(i) for i in sorted(set(settings.layers)))
    else:
        layers = r"\d+"
    mods = "|".join(re.escape(m) for m in settings.modules)
    return rf"(?:{'|'.join(towers)})\.encoder\.layers\.(?:{layers})\.self_attn\.(?:{mods})"


def apply_lora(model: AnomalyCLIP, settings: LoraSettings) -> Any:
    """Inject LoRA into `model.clip` in place (PEFT); returns the PeftModel (also kept on
    `model.peft_model`). Only LoRA and head parameters are trainable afterwards."""
    from peft import LoraConfig, get_peft_model

    depths = {
        "vision": int(model.clip.config.vision_config.num_hidden_layers),
        "text": int(model.clip.config.text_config.num_hidden_layers),
    }
    cfg = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_target_regex(settings, depths),
        bias="none",
    )
    with warnings.catch_warnings():
        # transformers 5 deprecation raised inside PEFT; not actionable here
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model.clip, cfg)
    # not registered as a submodule: it wraps the same modules as `model.clip`
    object.__setattr__(model, "peft_model", peft_model)
    return peft_model


def lora_module_names(model: AnomalyCLIP) -> list[str]:
    """Names (relative to the CLIPModel) of the modules that carry LoRA weights."""
    names = set()
    for name, _ in model.clip.named_parameters():
        if ".lora_A." in name:
            names.add(name.split(".lora_A.")[0])
    return sorted(names)


def parameter_summary(model: nn.Module) -> tuple[int, int, float]:
    """(trainable, total, trainable %) counting each parameter tensor once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total, 100.0 * trainable / max(total, 1)


def log_parameters(model: nn.Module) -> str:
    trainable, total, pct = parameter_summary(model)
    line = f"trainable parameters: {trainable:,} of {total:,} ({pct:.3f}%)"
    log.info(line)
    return line


def build_model(
    clip: Any,
    tokenizer: Any,
    model_cfg: ModelConfig,
    lora: LoraSettings | None,
    image_size: tuple[int, int] | None = None,
) -> AnomalyCLIP:
    model = AnomalyCLIP(clip, tokenizer, model_cfg, image_size)
    if lora is not None:
        apply_lora(model, lora)
    return model


def set_lora_random(model: AnomalyCLIP, std: float = 0.05, seed: int = 0) -> None:
    """Give every LoRA A and B matrix random values (PEFT initialises B to zero, which would
    make a merge test vacuous)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.clip.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
