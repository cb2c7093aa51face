"""Training configuration: frozen dataclasses built with `edge_runtime.config.from_mapping`,
so an unknown key in YAML or `--set` is an error naming it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edge_runtime.errors import ConfigError

NORMAL_PROMPT = "a photo of a flawless object"
ABNORMAL_PROMPT = "a photo of a damaged object"
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass(frozen=True)
class DataConfig:
    categories: tuple[str, ...] | None = None  # None: every category in the data set
    holdout: tuple[str, ...] = ()  # categories kept out of training (evaluated zero-shot)
    splits: tuple[str, ...] = ("train", "test")  # AnomalyCLIP trains on anomalies too
    max_images: int | None = None  # cap per run (seeded subset), for smoke runs

    def __post_init__(self) -> None:
        if self.categories and set(self.categories) & set(self.holdout):
            both = sorted(set(self.categories) & set(self.holdout))[0]
            raise ConfigError(f"data.categories and data.holdout both name '{both}'")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError("data.max_images must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    prompts: tuple[str, str] = (NORMAL_PROMPT, ABNORMAL_PROMPT)
    n_ctx: int = 4  # learnable context tokens per prompt (0 = plain prompts)
    feature_layers: tuple[int, ...] | None = None  # 1-based vision layers; None = spread over depth
    adapter: bool = True  # a learnable linear adapter per feature layer (identity init)
    learn_temperature: bool = True
    # input side in pixels; None = the CLIP's own. Above it (336/448/518 as AnomalyCLIP), the
    # position embedding is interpolated once at load (train.clip_loading.resize_position_embedding)
    image_size: int | None = None

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError("model.image_size must be >= 1 (pixels), or null for the CLIP's own size")
        if self.n_ctx < 0:
            raise ConfigError("model.n_ctx must be >= 0")
        if self.feature_layers is not None and (not self.feature_layers or min(self.feature_layers) < 1):
            raise ConfigError("model.feature_layers must list 1-based layer numbers")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    towers: tuple[Literal["vision", "text"], ...] = ("vision", "text")
    modules: tuple[str, ...] = LORA_MODULES
    layers: tuple[int, ...] | None = None  # 0-based encoder layer indices; None = all

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError("lora.rank must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("lora.dropout must be in [0, 1)")
        bad = [m for m in self.modules if m not in LORA_MODULES]
        if bad:
            raise ConfigError(f"lora.modules: unknown module '{bad[0]}' (known: {', '.join(LORA_MODULES)})")
        if self.layers is not None and any(i < 0 for i in self.layers):
            raise ConfigError("lora.layers must be 0-based, non-negative")


@dataclass(frozen=True)
class LossConfig:
    image: Literal["ce", "focal"] = "ce"
    image_weight: float = 1.0
    focal_weight: float = 1.0  # pixel focal
    dice_weight: float = 1.0  # pixel dice
    focal_gamma: float = 2.0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    batch_size: int = 8
    epochs: int = 5
    seed: int = 0
    amp: bool = True  # CUDA only; ignored (logged) on CPU
    grad_clip: float | None = 1.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch's default

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError("optim.lr must be > 0")
        if self.batch_size < 1:
            raise ConfigError("optim.batch_size must be >= 1")
        if self.epochs < 1:
            raise ConfigError("optim.epochs must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    clip: str = ""  # local folder or hub id (set by --clip)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
