"""Losses (AnomalyCLIP): image-level CE or focal on the global logits; pixel-level focal +
dice on every feature layer's map, upsampled to the mask size. Samples without pixel truth
(CSV image-level labels) contribute to the image loss only."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

from train.config import LossConfig


class LossParts(NamedTuple):
    total: torch.Tensor
    image: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """Mean focal loss. `probs` [..., 2] class probabilities, `target` [...] in {0, 1}."""
    p_true = torch.where(target > 0.5, probs[..., 1], probs[..., 0]).clamp(eps, 1.0)
    return (-((1.0 - p_true) ** gamma) * p_true.log()).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean soft dice loss over samples; `prob`, `target` [N, H, W]. The +1 smoothing makes an
    empty target with an empty prediction a zero loss (normal images)."""
    inter = (prob * target).flatten(1).sum(1)
    union = prob.flatten(1).sum(1) + target.flatten(1).sum(1)
    return (1.0 - (2.0 * inter + eps) / (union + eps)).mean()


def pixel_losses(patch_logits: torch.Tensor, masks: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(focal, dice) averaged over feature layers. `patch_logits` [N, L, h, w, 2]; `masks` [N, H, W]."""
    n, n_layers, gh, gw, _ = patch_logits.shape
    probs = patch_logits.float().softmax(-1).permute(0, 1, 4, 2, 3).reshape(n, n_layers * 2, gh, gw)
    probs = F.interpolate(probs, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)
    probs = probs.reshape(n, n_layers, 2, *masks.shape[-2:])
    target = masks.float()
    focal = patch_logits.new_zeros((), dtype=torch.float32)
    dice = patch_logits.new_zeros((), dtype=torch.float32)
    for k in range(n_layers):
        p = probs[:, k]
        focal = focal + focal_loss(p.permute(0, 2, 3, 1), target, gamma)
        # dice on both classes, as AnomalyCLIP: the abnormal map must cover the defect and the
        # normal map the rest
        dice = dice + dice_loss(p[:, 1], target) + dice_loss(p[:, 0], 1.0 - target)
    return focal / n_layers, dice / n_layers


def anomaly_loss(
    global_logits: torch.Tensor,
    patch_logits: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    has_mask: torch.Tensor,
    cfg: LossConfig = LossConfig(),
) -> LossParts:
    if cfg.image == "focal":
        image = focal_loss(global_logits.float().softmax(-1), labels.float(), cfg.focal_gamma)
    else:
        image = F.cross_entropy(global_logits.float(), labels.long())
    zero = global_logits.new_zeros((), dtype=torch.float32)
    focal, dice = zero, zero
    keep = has_mask.bool()
    if bool(keep.any()):  # training only: this branch never reaches the exported graph
        focal, dice = pixel_losses(patch_logits[keep], masks[keep], cfg.focal_gamma)
    total = cfg.image_weight * image + cfg.focal_weight * focal + cfg.dice_weight * dice
    return LossParts(total, image.detach(), focal.detach(), dice.detach())
