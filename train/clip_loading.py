"""Load a Hugging Face CLIP (local folder or hub id) with its tokenizer and preprocessing numbers."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError, DataError
from edge_runtime.preprocess import CLIP_MEAN, CLIP_STD

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedClip:
    """A loaded CLIP with its tokenizer and preprocessing numbers."""

    model: Any  # transformers.CLIPModel, eval mode, FP32, eager attention (plain MatMul/Softmax for ONNX)
    tokenizer: Any
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __iter__(self):  # unpacks as (model, tokenizer, image_size, mean, std)
        return iter((self.model, self.tokenizer, self.image_size, self.mean, self.std))


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1 or Path(source).exists()


def _mean_std(folder: Path | None) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    if folder is None or not (folder / "preprocessor_config.json").is_file():
        return CLIP_MEAN, CLIP_STD
    path = folder / "preprocessor_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        mean = tuple(float(v) for v in cfg.get("image_mean", CLIP_MEAN))
        std = tuple(float(v) for v in cfg.get("image_std", CLIP_STD))
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(mean) != 3 or len(std) != 3:
        raise DataError(f"{path}: image_mean/image_std must have 3 values")
    return mean, std  # type: ignore[return-value]


def write_preprocessor_config(
    folder: Path, image_size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> Path:
    """Write `folder`/preprocessor_config.json as Hugging Face's CLIPImageProcessor reads it
    (size (height, width), mean/std); `_mean_std` reads mean/std back from it. Returns the path."""
    path = folder / "preprocessor_config.json"
    path.write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": image_size[0]},
                "do_center_crop": True,
                "crop_size": {"height": image_size[0], "width": image_size[1]},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": list(mean),
                "image_std": list(std),
                "do_convert_rgb": True,
                "resample": 3,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return path


def load_clip(source: str | Path, local_only: bool = False, image_size: int | None = None) -> LoadedClip:
    """(CLIPModel, tokenizer, image_size (h, w), mean, std) from a local folder or a hub id.

    With `image_size` other than the CLIP's own, the position embedding table is resized once
    here (`resize_position_embedding`), so the model then IS a CLIP of that size: static shapes
    for training, ONNX export and TensorRT, and a merged folder that reloads at that size.
    A missing folder is a DataError; a hub id that cannot be fetched (offline, typo, gated)
    is a ConfigError. Weights are read from safetensors only (never a pickle).
    """
    from transformers import AutoTokenizer, CLIPModel

    text = str(source)
    folder: Path | None = None
    if not isinstance(source, Path) and "/" not in text and not Path(text).exists():
        # hub ids are "org/name"; a bare name is a folder that is not there
        raise DataError(
            f"CLIP folder not found: {text} (give a local folder or a hub id like openai/clip-vit-base-patch16)"
        )
    if isinstance(source, Path) or _looks_like_path(text):
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise DataError(f"CLIP folder not found: {folder}")
        if not (folder / "config.json").is_file():
            raise DataError(f"not a Hugging Face CLIP folder (no config.json): {folder}")
    where = str(folder) if folder else text
    try:
        model = CLIPModel.from_pretrained(
            where, use_safetensors=True, attn_implementation="eager", local_files_only=local_only or folder is not None
        )
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only or folder is not None)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if folder:
            raise DataError(f"cannot load CLIP folder {where}: {first}") from None
        raise ConfigError(
            f"cannot load CLIP '{where}': not a local folder, and the hub id cannot be loaded ({first})"
        ) from None
    if folder is None:
        # a hub snapshot: read its preprocessor_config from the local cache
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(text, allow_patterns=["preprocessor_config.json"], local_files_only=True))
        except Exception:
            folder = None
    mean, std = _mean_std(folder)
    if image_size is not None:
        resize_position_embedding(model, image_size)
    size = model.config.vision_config.image_size
    model.eval()
    if getattr(model.config, "clipinspect_random_test_model", None):
        log.warning("CLIP %s is a RANDOM test model (made by make-tiny-clip), not a trained CLIP", where)
    log.info(
        "loaded CLIP %s: %d px, patch %d, %.1fM parameters",
        where,
        size,
        model.config.vision_config.patch_size,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return LoadedClip(model, tokenizer, (int(size), int(size)), mean, std)


def check_image_size(image_size: int, patch_size: int) -> None:
    """A size the patch grid tiles exactly; anything else is a ConfigError naming the neighbours.

    HF's patch convolution would silently drop the last `image_size % patch_size` pixel rows and
    columns, so a defect there could never be seen: refuse instead of cropping in secret."""
    if image_size < patch_size:
        raise ConfigError(f"image size {image_size} is smaller than the patch size {patch_size}")
    rest = image_size % patch_size
    if rest:
        lower, upper = image_size - rest, image_size - rest + patch_size
        raise ConfigError(
            f"image size {image_size} is not a multiple of the patch size {patch_size} "
            f"(the last {rest} pixel rows/columns would never be seen); use {lower} or {upper}"
        )


def resize_position_embedding(model: Any, image_size: int) -> bool:
    """Resize the vision tower's position embedding table to `image_size` IN PLACE, once.

    The patch part of the table is bicubically interpolated by transformers' own
    `CLIPVisionEmbeddings.interpolate_pos_encoding` (the CLS position is kept), so the result
    equals running the original model with `interpolate_pos_encoding=True` at that size, but
    without doing it on every forward: the table, `position_ids`, `num_patches`, `image_size`
    and `config.vision_config.image_size` all describe the new size, and the origin is recorded
    in `config.clipinspect_position_interpolation`. Returns False when the size is already the
    model's."""
    import torch
    from torch import nn

    vcfg = model.config.vision_config
    patch = int(vcfg.patch_size)
    size = int(image_size)
    check_image_size(size, patch)
    emb = model.vision_model.embeddings
    if size == int(emb.image_size) and size == int(vcfg.image_size):
        return False
    old_size = int(emb.image_size)
    weight = emb.position_embedding.weight
    grid = size // patch
    with torch.no_grad():
        # interpolate_pos_encoding reads only the token count, dtype and device of `embeddings`
        probe = weight.new_zeros(1, grid * grid + 1, weight.shape[1])
        table = emb.interpolate_pos_encoding(probe, size, size)[0].detach().clone()
    new = nn.Embedding(table.shape[0], table.shape[1], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(table)
    new.weight.requires_grad_(weight.requires_grad)
    emb.position_embedding = new
    emb.image_size = size
    emb.num_patches = grid * grid
    emb.num_positions = grid * grid + 1
    emb.register_buffer(
        "position_ids", torch.arange(grid * grid + 1, device=weight.device).expand((1, -1)), persistent=False
    )
    vcfg.image_size = size
    history = dict(getattr(model.config, "clipinspect_position_interpolation", None) or {})
    history.setdefault("from_image_size", old_size)
    history.update(to_image_size=size, mode="bicubic (transformers interpolate_pos_encoding)")
    model.config.clipinspect_position_interpolation = history
    log.info(
        "position embedding resized %d -> %d px (%d -> %d patch tokens, patch %d)",
        old_size,
        size,
        (old_size // patch) ** 2,
        grid * grid,
        patch,
    )
    return True
