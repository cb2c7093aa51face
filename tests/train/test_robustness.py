"""Robustness measures of the product spec: augmentation (masks follow images), FGSM
adversarial training (the batch moves along the sign of the loss gradient) and the PGD attack
in eval (more steps push the loss at least as far as FGSM), plus their config validation."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from edge_runtime.cli import main  # noqa: E402
from edge_runtime.config import from_mapping  # noqa: E402
from edge_runtime.errors import ConfigError  # noqa: E402
from train.adversarial import adversarial_count, fgsm_batch, pgd, score_loss  # noqa: E402
from train.augment import AugmentedDataset, Drawn, apply, draw, set_epoch, with_augmentation  # noqa: E402
from train.config import AdversarialConfig, AugmentConfig, TrainConfig  # noqa: E402
from train.data import AnomalyDataset, Sample  # noqa: E402


def _square_image(h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Dark image with a bright off-centre, asymmetric rectangle, and its mask."""
    img = np.full((h, w, 3), 0.1, np.float32)
    mask = np.zeros((h, w), np.float32)
    img[8:22, 36:58] = 0.9
    mask[8:22, 36:58] = 1.0
    return img, mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_geometric_ops_move_the_mask_with_the_image():
    img, mask = _square_image()
    for angle, scale in [(90.0, 1.0), (-33.0, 1.0), (17.0, 1.3), (0.0, 0.75)]:
        out, m = apply(img, mask, Drawn(angle_deg=angle, scale=scale), np.random.default_rng(0))
        bright, marked = out.mean(axis=2) > 0.5, m > 0.5
        assert set(np.unique(m)) <= {0.0, 1.0}  # nearest neighbour: still a binary mask
        assert _iou(bright, marked) > 0.85, (angle, scale)
        assert _iou(marked, mask > 0.5) < 0.8, "the transform must actually move the defect"
    # 90 degrees is exact: the same as numpy's rotation of both (counter-clockwise, as OpenCV)
    out, m = apply(img, mask, Drawn(angle_deg=90.0), np.random.default_rng(0))
    np.testing.assert_array_equal(m, np.rot90(mask))


def test_photometric_ops_touch_the_image_only():
    img, mask = _square_image()
    cfg = AugmentConfig(prob=1.0, brightness=0.2, contrast=0.3, gaussian_noise=10.0, salt_pepper=0.05)
    rng = np.random.default_rng(1)
    params = draw(cfg, rng)
    assert params.angle_deg is None and params.scale is None and params.noise_std == pytest.approx(10 / 255)
    out, m = apply(img, mask, params, rng)
    np.testing.assert_array_equal(m, mask)
    assert out.min() >= 0 and out.max() <= 1 and np.abs(out - img).mean() > 0.01
    sp = apply(img, mask, Drawn(salt_pepper=0.1), np.random.default_rng(2))[0]
    changed = np.any(sp != img, axis=2)
    assert 0.05 < changed.mean() < 0.15 and set(np.unique(sp[changed])) <= {0.0, 1.0}


def test_augmented_dataset_follows_masks_and_is_seeded_by_epoch(tmp_path):
    img, mask = _square_image(80, 96)
    cv2.imwrite(str(tmp_path / "img.png"), (img * 255).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "mask.png"), (mask * 255).astype(np.uint8))
    sample = Sample(tmp_path / "img.png", 1, tmp_path / "mask.png", "toy", "square")
    base = AnomalyDataset([sample], (64, 64), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    cfg = AugmentConfig(prob=1.0, rotation_deg=45.0, scale=(0.9, 1.2))
    ds = with_augmentation(base, cfg, seed=3)
    assert isinstance(ds, AugmentedDataset) and with_augmentation(base, AugmentConfig(), 3) is base
    a = ds[0]
    x = a["pixel_values"].numpy() * np.array([0.2, 0.25, 0.3]).reshape(3, 1, 1) + np.array([0.5, 0.4, 0.3]).reshape(
        3, 1, 1
    )
    assert _iou(x.mean(axis=0) > 0.5, a["mask"].numpy() > 0.5) > 0.85
    assert set(a) == set(base[0]) and a["label"] == 1 and ds.image_size == (64, 64)
    assert torch.equal(ds[0]["pixel_values"], a["pixel_values"])  # same (seed, epoch, index): same draw
    set_epoch(ds, 2)
    assert not torch.equal(ds[0]["mask"], a["mask"])  # another epoch: another draw


def test_augment_and_adversarial_config_validation():
    assert not AugmentConfig().enabled and AdversarialConfig().fraction == 0.0
    assert AugmentConfig(rotation_deg=10).enabled and not AugmentConfig(prob=0.0, rotation_deg=10).enabled
    for bad in [
        {"augment": {"rotation_deg": 400}},
        {"augment": {"scale": [1.2, 0.8]}},
        {"augment": {"prob": 2}},
        {"augment": {"salt_pepper": 0.9}},
        {"augment": {"gaussian_noise": -1}},
        {"adversarial": {"fraction": 1.5}},
        {"adversarial": {"eps": 0}},
    ]:
        with pytest.raises(ConfigError):
            from_mapping(TrainConfig, bad)
    with pytest.raises(ConfigError, match="did you mean 'rotation_deg'"):
        from_mapping(TrainConfig, {"augment": {"rotation_degs": 5}})
    smoke = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_smoke.yaml"
    from train.trainer import resolve_config

    cfg = resolve_config(smoke, [], clip="x")
    assert not cfg.augment.enabled and cfg.adversarial.fraction == 0.0
    assert [adversarial_count(8, f) for f in (0.0, 0.01, 0.5, 1.0)] == [0, 1, 4, 8]


@pytest.fixture(scope="module")
def tiny(tiny_clip_dir):
    from tests.plugins.models import build_tiny_model

    torch.set_num_threads(1)
    model, loaded = build_tiny_model(tiny_clip_dir, seed=5)
    h, w = loaded.image_size
    gen = torch.Generator().manual_seed(0)
    x01 = torch.rand((6, 3, h, w), generator=gen)
    mean = torch.tensor(loaded.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std).view(1, 3, 1, 1)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    masks = torch.zeros((6, h, w))
    masks[1, 8:24, 8:24] = 1
    masks[3, 30:50, 20:40] = 1
    masks[4, 40:60, 40:60] = 1
    return model, loaded, (x01 - mean) / std, labels, masks, mean, std


def _train_loss(model, pix, labels, masks, cfg):
    from train.losses import anomaly_loss

    out = model(pix, model.text_embeddings())
    return anomaly_loss(
        out.global_logits, out.patch_logits, labels, masks, torch.ones(len(labels), dtype=torch.bool), cfg.loss
    ).total


def test_fgsm_batch_moves_along_the_sign_of_the_loss_gradient(tiny):
    model, loaded, pix, labels, masks, mean, std = tiny
    cfg = TrainConfig(adversarial=AdversarialConfig(fraction=0.5, eps=4.0))
    has_mask = torch.ones(6, dtype=torch.bool)
    adv = fgsm_batch(model, pix, labels, masks, has_mask, cfg, loaded.mean, loaded.std)
    assert adv.shape == pix.shape and not adv.requires_grad
    assert torch.equal(adv[3:], pix[3:])  # the clean rest of the batch is untouched
    assert all(p.grad is None for p in model.parameters())  # the trainer's backward is not polluted

    x = (pix[:3] * std + mean).requires_grad_(True)
    (grad,) = torch.autograd.grad(_train_loss(model, (x - mean) / std, labels[:3], masks[:3], cfg), x)
    delta = (adv[:3] * std + mean) - x.detach()
    eps = 4.0 / 255
    inside = (x.detach() > eps) & (x.detach() < 1 - eps) & (grad != 0)  # not clipped at 0 or 1
    assert inside.float().mean() > 0.9
    assert torch.equal(torch.sign(delta[inside]), torch.sign(grad[inside]))
    assert torch.allclose(delta[inside].abs(), torch.full_like(delta[inside], eps), atol=1e-5)
    with torch.no_grad():
        clean = _train_loss(model, pix[:3], labels[:3], masks[:3], cfg)
        attacked = _train_loss(model, adv[:3], labels[:3], masks[:3], cfg)
    assert attacked > clean


def test_pgd_with_more_steps_raises_the_loss_at_least_as_much_as_fgsm(tiny):
    model, loaded, pix, labels, _, _, _ = tiny
    text = model.text_embeddings().detach()
    eps = 4.0 / 255
    with torch.no_grad():
        clean = float(score_loss(model(pix, text).score, labels))
    one = pgd(model, pix, labels, text, loaded.mean, loaded.std, eps, steps=1, alpha=eps)  # = FGSM
    many = pgd(model, pix, labels, text, loaded.mean, loaded.std, eps, steps=8)
    with torch.no_grad():
        fgsm_loss = float(score_loss(model(one, text).score, labels))
        pgd_loss = float(score_loss(model(many, text).score, labels))
    std = torch.tensor(loaded.std).view(1, 3, 1, 1)
    assert float(((many - pix) * std).abs().max()) <= eps + 1e-6  # stays inside the budget
    assert clean < fgsm_loss <= pgd_loss + 1e-6, (clean, fgsm_loss, pgd_loss)


def test_eval_reports_pgd_next_to_fgsm_and_training_runs_with_both_on(tiny_clip_dir, tmp_path, capsys):
    from tests.train.helpers import synth_data, train_argv

    data = synth_data(tmp_path / "data")
    run = tmp_path / "run"
    argv = train_argv(
        data,
        tiny_clip_dir,
        run,
        "--epochs",
        "1",
        "--set",
        "data.max_images=8",
        "--set",
        "augment.prob=1.0",
        "--set",
        "augment.rotation_deg=20",
        "--set",
        "augment.gaussian_noise=5",
        "--set",
        "adversarial.fraction=0.5",
        "--set",
        "adversarial.eps=2",
    )
    assert main(argv) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(record["loss"])
    assert (
        main(
            [
                "eval",
                "--run",
                str(run),
                "--data",
                str(data),
                "--fgsm",
                "0.02",
                "--pgd-steps",
                "4",
                "--heatmaps",
                "0",
                "--device",
                "cpu",
                "--no-threshold",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "PGD eps=0.02 x4 steps" in out and "FGSM eps=0.02" in out
    doc = json.loads((run / "eval" / "metrics.json").read_text())
    assert doc["pgd"]["steps"] == 4 and doc["pgd"]["perturbed_image_auroc"] <= doc["pgd"]["clean_image_auroc"]
    assert main(["eval", "--run", str(run), "--data", str(data), "--pgd-steps", "3"]) == 2
    assert "--pgd-steps needs --fgsm" in capsys.readouterr().err

    # One PGD step of size eps is FGSM, image for image: eval's fgsm_scores (which runs it)
    # against FGSM written out here (BCE of the score, one signed gradient step, clipped).
    import torch.nn.functional as F

    from train.data import load_samples
    from train.evaluate import EvalOptions, fgsm_scores
    from train.run_state import load_run_model

    model, info = load_run_model(run)
    ds = AnomalyDataset(load_samples(data, splits=("test",)), info.image_size, info.mean, info.std)
    got = fgsm_scores(model, ds, 0.02, EvalOptions(batch_size=4), progress=False)
    text = model.text_embeddings().detach()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))
    m, s = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    x = (batch["pixel_values"] * s + m).clamp(0, 1).requires_grad_(True)
    score = model((x - m) / s, text).score.float().clamp(1e-6, 1 - 1e-6)
    (grad,) = torch.autograd.grad(F.binary_cross_entropy(score, batch["label"].float()), x)
    with torch.no_grad():
        ref = model(((x + 0.02 * grad.sign()).clamp(0, 1) - m) / s, text).score.numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_fgsm_batch_under_distributed_data_parallel(tiny, tiny_clip_dir, tmp_path):
    """The trainer may wrap the model in DDP (torchrun); the attack must not leave DDP waiting
    for a gradient reduction (gloo, one process on the CPU)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tests.plugins.models import build_tiny_model
    from train.losses import anomaly_loss

    _, loaded, pix, labels, masks, _, _ = tiny
    model = build_tiny_model(tiny_clip_dir, seed=6)[0].train()  # its own copy: DDP leaves hooks behind
    cfg = TrainConfig(adversarial=AdversarialConfig(fraction=0.5, eps=2.0))
    has_mask = torch.ones(6, dtype=torch.bool)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model)
        for _ in range(2):  # a second iteration is where a pending reduction would raise
            adv = fgsm_batch(ddp, pix, labels, masks, has_mask, cfg, loaded.mean, loaded.std)
            out = ddp(adv, model.text_embeddings())
            anomaly_loss(out.global_logits, out.patch_logits, labels, masks, has_mask, cfg.loss).total.backward()
        assert not torch.equal(adv[:3], pix[:3]) and torch.equal(adv[3:], pix[3:])
    finally:
        dist.destroy_process_group()
