"""Per-epoch validation: loss and image AUROC on the validation split, which picks the best
epoch (train.run_state.best_epoch). Scores are the model's image scores, as eval and the
device use them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def validate(model: Any, dataset: Any, config: Any, device: str, batch_size: int) -> dict[str, Any]:
    """{"val_images", "val_loss", "val_image_auroc", "val_criterion", "val_score"}: the score is
    the image AUROC when the validation images hold both classes, else minus the loss."""
    import torch

    from train.frame_module import batch_input
    from train.losses import anomaly_loss
    from train.metrics import auroc

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    was_training = model.training
    model.eval()
    scores = np.zeros(len(dataset), np.float64)
    labels = np.zeros(len(dataset), np.int64)
    total = 0.0
    try:
        with torch.no_grad():
            text = model.text_embeddings()
            for batch in loader:
                idx = batch["index"].numpy()
                out = model(batch_input(batch).to(device), text)
                parts = anomaly_loss(
                    out.global_logits,
                    out.patch_logits,
                    batch["label"].to(device),
                    batch["mask"].to(device),
                    batch["has_mask"].to(device),
                    config.loss,
                )
                total += float(parts.total) * len(idx)
                scores[idx] = out.score.float().cpu().numpy()
                labels[idx] = batch["label"].numpy()
    finally:
        model.train(was_training)
    loss = total / max(len(dataset), 1)
    auc = auroc(labels, scores)
    if math.isnan(auc):
        return {
            "val_images": len(dataset),
            "val_loss": loss,
            "val_image_auroc": None,
            "val_criterion": "loss",
            "val_score": -loss,
        }
    return {
        "val_images": len(dataset),
        "val_loss": loss,
        "val_image_auroc": auc,
        "val_criterion": "image_auroc",
        "val_score": auc,
    }
