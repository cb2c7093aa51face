"""Adversarial examples for training (FGSM) and evaluation (PGD).

Both work in pixel space [0, 1]: the model's input is normalised, x_norm = (x - mean) / std,
so an L-inf budget of eps grey levels is eps / 255 in x, whatever mean/std the model uses.
Perturbed images are clipped to [0, 1] and kept in float (not re-quantised to uint8).

- Training (`fgsm_batch`): the first `fraction` of each (already shuffled) batch is replaced
  by x + eps * sign(d L / d x), with L the training loss itself (image + pixel terms), as in
  Goodfellow et al.'s adversarial training. Gradients go to the input only; the parameters'
  .grad is untouched, so the trainer's own backward pass is unchanged. The attack runs in
  float32 (outside any autocast), so it is the same with and without AMP.
- Evaluation (`pgd`): Madry et al.'s projected gradient descent on the BCE of the image score
  (the number the device thresholds), `steps` steps of size `alpha` (default 2.5 * eps /
  steps), projected back onto the eps ball and [0, 1] after each step, no random start (so
  one step with alpha = eps is exactly eval's `--fgsm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _stats(mean: Sequence[float], std: Sequence[float], like: Any) -> tuple[Any, Any]:
    import torch

    m = torch.as_tensor(mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return m, s


def adversarial_count(batch: int, fraction: float) -> int:
    """How many items of a batch of `batch` become adversarial (at least one when fraction > 0)."""
    if fraction <= 0 or batch <= 0:
        return 0
    return min(batch, max(1, round(fraction * batch)))


def fgsm_batch(
    model: Any,
    pix: Any,
    labels: Any,
    masks: Any,
    has_mask: Any,
    config: Any,
    mean: Sequence[float],
    std: Sequence[float],
) -> Any:
    """`pix` (normalised [B,3,H,W]) with its first `config.adversarial.fraction` replaced by
    FGSM examples of the training loss; the rest unchanged. Returns a new tensor (no grad)."""
    import torch

    from train.losses import anomaly_loss

    k = adversarial_count(pix.shape[0], config.adversarial.fraction)
    if k == 0:
        return pix
    # Attack the plain module: a DistributedDataParallel wrapper would wait for a parameter
    # gradient reduction that this input-only gradient never triggers. Each rank attacks its
    # own shard of the batch, which is all FGSM needs.
    net = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    m, s = _stats(mean, std, pix)
    x = (pix[:k].detach() * s + m).clamp(0, 1).requires_grad_(True)
    out = net((x - m) / s, net.text_embeddings())
    loss = anomaly_loss(out.global_logits, out.patch_logits, labels[:k], masks[:k], has_mask[:k], config.loss).total
    (grad,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        x_adv = (x + (config.adversarial.eps / 255.0) * grad.sign()).clamp(0, 1)
        return torch.cat([(x_adv - m) / s, pix[k:].detach()], dim=0)


def score_loss(score: Any, labels: Any) -> Any:
    """BCE of the image score against the label: what the eval attacks push up."""
    import torch.nn.functional as F

    return F.binary_cross_entropy(score.float().clamp(1e-6, 1 - 1e-6), labels.float())


def pgd(
    model: Any,
    pix: Any,
    labels: Any,
    text: Any,
    mean: Sequence[float],
    std: Sequence[float],
    eps: float,
    steps: int,
    alpha: float | None = None,
) -> Any:
    """Normalised adversarial images after `steps` PGD steps within an L-inf ball of `eps`
    (pixel scale [0, 1]) around `pix` (normalised). `alpha` defaults to 2.5 * eps / steps."""
    import torch

    if steps < 1 or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"pgd needs steps >= 1 and eps > 0, got steps={steps}, eps={eps}")
    step = 2.5 * eps / steps if alpha is None else alpha
    m, s = _stats(mean, std, pix)
    x0 = (pix.detach() * s + m).clamp(0, 1)
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = score_loss(model((x - m) / s, text).score, labels)
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x + step * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    return ((x - m) / s).detach()
