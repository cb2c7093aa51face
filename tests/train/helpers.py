"""Helpers shared by the training tests: a small synthetic data set and a quick `train` argv."""

from __future__ import annotations

from pathlib import Path

# One thread, batch 4, no progress bar: what every CLI training run in these tests uses.
QUICK = ("--no-progress", "--set", "optim.threads=1", "--set", "optim.batch_size=4")


def synth_data(out: Path, categories: int = 1) -> Path:
    """Write a 64 px synthetic data set at `out` (seed 0, 4 good training images, 2 per class); return `out`."""
    from train.synth import SynthSpec, make_synthetic_dataset

    spec = SynthSpec(seed=0, categories=categories, size=64, train_good=4, per_class=2)
    return make_synthetic_dataset(out, spec, progress=False).root


def train_argv(data: Path, clip: Path, out: Path, *extra: str) -> list[str]:
    """`clipinspect train` argv for `data` on `clip` into `out`, with QUICK and then `extra`."""
    return ["train", "--data", str(data), "--clip", str(clip), "--out", str(out), *QUICK, *extra]
