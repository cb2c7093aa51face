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
    # Honest splits (train/splits.py): the validation images choose the best epoch and the
    # threshold; the test images are only reported.
    val_fraction: float = 0.2  # of the training pool, per category and label, when the data has no val split
    test_fraction: float = 0.5  # of a trained category's own test images kept for test when `splits` trains on test
    unsplit: Literal["error", "seeded"] = "error"  # CSV rows without a split: refuse, or assign by seed
    manifest: str = ""  # check-data --write-manifest file the images must match before training ("" = none)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction must be in [0, 1), got {self.test_fraction}")
        bad = [s for s in self.splits if s not in ("train", "test")]
        if bad:
            raise ConfigError(
                f"data.splits: training draws from 'train' and/or 'test', not {bad[0]!r} "
                "(validation images are never trained on)"
            )
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
    # Raw-frame training (train/frame_module.py): the model learns on the camera's uint8 frame
    # through the same FramePreprocess the exported graph runs. None = model-size RGB images.
    input_format: str | None = None  # rgb8, bgr8, bayer_rg8, bayer_bg8, bayer_gr8, bayer_gb8, mono8
    input_size: str | tuple[int, int] | None = None  # the frame, "WxH" or [W, H] (e.g. 4096x2160)
    roi: tuple[int, int, int, int] | None = None  # [x, y, width, height] in frame pixels; None = whole frame

    def __post_init__(self) -> None:
        self._check_frame()
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError("model.image_size must be >= 1 (pixels), or null for the CLIP's own size")
        if self.n_ctx < 0:
            raise ConfigError("model.n_ctx must be >= 0")
        if self.feature_layers is not None and (not self.feature_layers or min(self.feature_layers) < 1):
            raise ConfigError("model.feature_layers must list 1-based layer numbers")

    def _check_frame(self) -> None:
        from edge_runtime.rawframe import check_format, check_roi, parse_size

        if (self.input_format is None) != (self.input_size is None):
            raise ConfigError(
                "model.input_format and model.input_size go together (the frame as the camera delivers it)"
            )
        if self.roi is not None and self.input_format is None:
            raise ConfigError("model.roi needs model.input_format/model.input_size (it crops the raw frame)")
        if self.input_format is not None:
            try:
                check_format(self.input_format)
                check_roi(self.input_format, parse_size(self.input_size), self.roi)  # type: ignore[arg-type]
            except ConfigError as exc:
                raise ConfigError(f"model: {exc}") from None

    @property
    def frame(self) -> tuple[str, tuple[int, int], tuple[int, int, int, int] | None] | None:
        """(input format, frame (height, width), ROI) for raw-frame training; None for RGB."""
        if self.input_format is None:
            return None
        from edge_runtime.rawframe import parse_size

        return self.input_format, parse_size(self.input_size), self.roi  # type: ignore[arg-type]


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
class AugmentConfig:
    """Training-time augmentation (train/augment.py); every op is off at its default.
    Geometric ops (rotation, scale) move the image and its mask together; photometric ops
    (brightness, contrast, noise) touch the image only. Each enabled op fires with `prob`."""

    prob: float = 0.5  # chance that each enabled op is applied to an image
    rotation_deg: float = 0.0  # uniform angle in [-r, r] degrees
    scale: tuple[float, float] = (1.0, 1.0)  # uniform zoom factor range (> 1 zooms in)
    brightness: float = 0.0  # additive shift, uniform in [-b, b] of full scale (0.1 = +-25.5 grey levels)
    contrast: float = 0.0  # gain about the image mean, uniform in [1 - c, 1 + c]
    gaussian_noise: float = 0.0  # noise standard deviation in grey levels (0-255 units)
    salt_pepper: float = 0.0  # fraction of pixels set to black or white

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ConfigError(f"augment.prob must be in [0, 1], got {self.prob}")
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise ConfigError(f"augment.rotation_deg must be in [0, 180], got {self.rotation_deg}")
        if len(self.scale) != 2 or not 0.0 < self.scale[0] <= self.scale[1] <= 4.0:
            raise ConfigError(f"augment.scale must be [low, high] with 0 < low <= high <= 4, got {list(self.scale)}")
        if not 0.0 <= self.brightness <= 1.0 or not 0.0 <= self.contrast < 1.0:
            raise ConfigError("augment.brightness must be in [0, 1] and augment.contrast in [0, 1)")
        if not 0.0 <= self.gaussian_noise <= 255.0:
            raise ConfigError(
                f"augment.gaussian_noise is a standard deviation in grey levels, 0..255, got {self.gaussian_noise}"
            )
        if not 0.0 <= self.salt_pepper <= 0.5:
            raise ConfigError(f"augment.salt_pepper must be a pixel fraction in [0, 0.5], got {self.salt_pepper}")

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (
            self.rotation_deg > 0
            or tuple(self.scale) != (1.0, 1.0)
            or self.brightness > 0
            or self.contrast > 0
            or self.gaussian_noise > 0
            or self.salt_pepper > 0
        )


@dataclass(frozen=True)
class AdversarialConfig:
    """FGSM adversarial training (train/adversarial.py): `fraction` of each batch is replaced
    by one-step FGSM examples of the training loss, `eps` in grey levels (0-255 units)."""

    fraction: float = 0.0  # 0 = off
    eps: float = 2.0  # L-inf step in grey levels; 2 = 2/255 of full scale

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"adversarial.fraction must be in [0, 1], got {self.fraction}")
        if not 0.0 < self.eps <= 255.0:
            raise ConfigError(
                f"adversarial.eps is in grey levels (0-255 units) and must be in (0, 255], got {self.eps}"
            )


@dataclass(frozen=True)
class TrainConfig:
    clip: str = ""  # local folder or hub id (set by --clip)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def __post_init__(self) -> None:
        if self.model.input_format is not None and self.adversarial.fraction > 0:
            raise ConfigError(
                "adversarial.fraction > 0 with model.input_format: FGSM perturbs the model-size RGB image, "
                "a raw-frame run trains on uint8 camera frames; use augment.* (applied before the mosaic)"
            )
