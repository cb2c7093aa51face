"""Helpers shared by the training tests: a small synthetic data set, `train` argvs, and the
single-process vs `--nproc 2` comparison of the DDP tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# One thread, batch 4, no progress bar: what every CLI training run in these tests uses.
QUICK = ("--no-progress", "--set", "optim.threads=1", "--set", "optim.batch_size=4")
# 2 processes vs 1 differ only by float summation order (gradient all-reduce, batch split):
# measured max |diff| ~1e-7 after 2 AdamW steps; 1e-5 leaves room and still fails on any
# real difference (a wrong shard or batch moves LoRA weights by ~lr = 1e-4 per step).
ATOL = 1e-5


def synth_data(out: Path, categories: int = 1, size: int = 64, train_good: int = 4) -> Path:
    """Write a synthetic data set at `out` (seed 0, `size` px, `train_good` good training images, 2 per class);
    return `out`."""
    from train.synth import SynthSpec, make_synthetic_dataset

    spec = SynthSpec(seed=0, categories=categories, size=size, train_good=train_good, per_class=2)
    return make_synthetic_dataset(out, spec, progress=False).root


def train_argv(data: Path, clip: Path, out: Path, *extra: str, quick: bool = True) -> list[str]:
    """`clipinspect train` argv for `data` on `clip` into `out`, then QUICK (unless `quick` is false), then `extra`."""
    return ["train", "--data", str(data), "--clip", str(clip), "--out", str(out), *(QUICK if quick else ()), *extra]


def cli_subprocess(*args: object) -> subprocess.CompletedProcess:
    """Run `clipinspect *args` in a fresh Python (as torchrun's parent would be), capturing its output."""
    code = "import sys; from edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "-q", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def max_weight_diff(a_dir: Path, b_dir: Path, name: str) -> float:
    """Largest |a - b| over every tensor of the safetensors file `name` in two folders (same keys asserted)."""
    from safetensors.torch import load_file

    a, b = load_file(str(a_dir / name)), load_file(str(b_dir / name))
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def train_single_and_ddp(data: Path, clip: Path, tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """Train one CPU epoch on `data` with `clip` (QUICK, 8 images, then `extra`) once in this process
    and once through `train --nproc 2` (torchrun, 2 gloo processes); assert both succeed and return
    the (single, multi) run folders under `tmp_path`."""
    from edge_runtime.cli import main

    common = [
        *("--data", str(data), "--clip", str(clip), "--epochs", "1", "--device", "cpu", *extra, *QUICK),
        *("--set", "data.max_images=8"),
        # exact equality needs a training set that is a multiple of the global batch: no val draw
        *("--set", "data.val_fraction=0"),
    ]
    single, multi = tmp_path / "single", tmp_path / "ddp"
    assert main(["train", *common, "--out", str(single)]) == 0
    # through the CLI launcher: clipinspect train --nproc 2 -> torchrun -> 2 x train.ddp (gloo)
    proc = cli_subprocess("train", *common, "--out", multi, "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return single, multi
