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


class AnomalyHead(nn.Module):
    """Every learned parameter that is not LoRA: context tokens, adapters, temperature."""

    def __init__(self, n_ctx: int, text_width: int, proj_dim: int, n_layers: int, adapter: bool,
                 logit_scale: float, learn_temperature: bool) -> None:
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
    def __init__(self, clip: Any, tokenizer: Any, config: ModelConfig = ModelConfig(),
                 image_size: tuple[int, int] | None = None) -> None:
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
            config.n_ctx, int(tcfg.hidden_size), self.embed_dim, len(layers), config.adapter,
            float(clip.logit_scale.detach()), config.learn_temperature,
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

    def forward(self, pixel_values: torch.Tensor, text_embeddings: torch.Tensor) -> AnomalyOutput:
        vm = self.clip.vision_model
        h = vm.embeddings(pixel_values)
        h = vm.pre_layrnorm(h)
        feats = []
        for i, layer in enumerate(vm.encoder.layers):
            h = layer(h, None)
            if i + 1 in self.feature_layers:
                feats.append(h)
        scale = self.temperature()
        text = text_embeddings.to(h.dtype)
        gh, gw = self.grid
        layer_logits = []
        for k, feat in enumerate(feats):
            z = self.clip.visual_projection(vm.post_layernorm(feat[:, 1:, :]))
            if len(self.head.adapters):
                z = self.head.adapters[k](z)
            z = F.normalize(z, dim=-1)
            layer_logits.append((scale * (z @ text.t())).reshape(-1, gh, gw, 2))
        patch_logits = torch.stack(layer_logits, dim=1).float()  # [N, L, h, w, 2]
        layer_maps = patch_logits.softmax(dim=-1)[..., 1]
        anomaly_map = layer_maps.mean(dim=1)
        g = F.normalize(self.clip.visual_projection(vm.post_layernorm(h[:, 0, :])), dim=-1)
        global_logits = (scale * (g @ text.t())).float()
        p_global = global_logits.softmax(dim=-1)[:, 1]
        score = 0.5 * (p_global + anomaly_map.amax(dim=(1, 2)))
        return AnomalyOutput(score, anomaly_map, global_logits, patch_logits)

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
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=lora_target_regex(settings, depths), bias="none",
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


def build_model(clip: Any, tokenizer: Any, model_cfg: ModelConfig, lora: LoraSettings | None,
                image_size: tuple[int, int] | None = None) -> AnomalyCLIP:
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
