"""Parity: does the exported graph compute what the merged model computes, on real images?

Both sides read the same image files through the device's own code
(edge_runtime.file_input: preprocess.prepare, or the raw frame for raw-frame bundles), then the reference (torch, merged
model) and the candidate (a device backend from the registry, `ort-cpu` by default: the same
OrtBackend `clipinspect run` uses) run on identical inputs. We report the largest score and map differences and whether the OK/NG verdicts
at the bundle threshold agree. Tolerances follow DESIGN §5: FP32 1e-4, FP16 1e-2.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.backends.base import Backend, Outputs
from edge_runtime.bundle import Bundle
from edge_runtime.errors import CheckFailed, DataError
from edge_runtime.file_input import model_input
from edge_runtime.imageio import IMAGE_SUFFIXES
from edge_runtime.verdict import decide

log = logging.getLogger(__name__)

DEFAULT_ATOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}


def default_atol(precision: str) -> float:
    """The tolerance on |Δscore| and |Δmap| for `precision` (DESIGN §5)."""
    return DEFAULT_ATOL.get(precision, 1e-2)


def list_images(folder: str | Path, max_images: int | None = None) -> list[Path]:
    """Image files under `folder` (recursive, sorted), masks skipped; if there are more than
    `max_images`, an evenly spaced subset so good and defective folders are both sampled."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    # MVTec/Kolektor masks are '<name>_mask.png' under ground_truth/: not inputs.
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not p.stem.endswith("_mask")
        and "ground_truth" not in p.parts
    )
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    if max_images is not None and 0 < max_images < len(files):
        idx = np.linspace(0, len(files) - 1, max_images).round().astype(int)
        files = [files[i] for i in sorted(set(idx.tolist()))]
    return files


@dataclass(frozen=True)
class ParityRow:
    """One image's reference and candidate score and its largest map difference."""

    image: str
    ref_score: float
    cand_score: float
    map_diff: float  # max |Δ| over the patch grid

    @property
    def score_diff(self) -> float:
        """|Δscore|; infinity when either side is NaN."""
        d = abs(self.ref_score - self.cand_score)
        return d if d == d else float("inf")  # NaN must fail the tolerance


@dataclass(frozen=True)
class ParityReport:
    """Parity of a candidate backend against a reference on real images.

    Attributes:
        rows: one per image.
        atol: the tolerance on |Δscore| and |Δmap|.
        threshold: the bundle's OK/NG threshold (for verdict agreement).
        reference, candidate: 'backend/precision' labels from the backends' describe().
        ms_per_image: mean milliseconds per stage.
    """

    rows: tuple[ParityRow, ...]
    atol: float
    threshold: float
    reference: str
    candidate: str
    ms_per_image: Mapping[str, float] = field(default_factory=dict)  # stage -> mean ms

    @property
    def max_score_diff(self) -> float:
        """Largest |Δscore| over the images."""
        return max((r.score_diff for r in self.rows), default=0.0)

    @property
    def max_map_diff(self) -> float:
        """Largest |Δmap| over the images."""
        return max((r.map_diff for r in self.rows), default=0.0)

    @property
    def verdicts_agree(self) -> int:
        """How many images get the same OK/NG verdict from both sides."""
        return sum(decide(r.ref_score, self.threshold) == decide(r.cand_score, self.threshold) for r in self.rows)

    @property
    def ok(self) -> bool:
        """True when there are images and every difference is within atol (NaN fails)."""
        # `not x > atol` would pass NaN; compare so that NaN fails.
        return bool(self.rows) and self.max_score_diff <= self.atol and self.max_map_diff <= self.atol

    def table(self) -> str:
        """One line per image."""
        lines = [f"{'image':<48} {'ref score':>10} {'cand score':>10} {'|Δscore|':>10} {'max|Δmap|':>10}"]
        for r in self.rows:
            name = r.image if len(r.image) <= 48 else "…" + r.image[-47:]
            lines.append(
                f"{name:<48} {r.ref_score:>10.6f} {r.cand_score:>10.6f} {r.score_diff:>10.2e} {r.map_diff:>10.2e}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: the largest differences, verdict agreement and PASS/FAIL."""
        return (
            f"{self.candidate} vs {self.reference} on {len(self.rows)} images: "
            f"max |Δscore| {self.max_score_diff:.3e}, max |Δmap| {self.max_map_diff:.3e} (atol {self.atol:g}); "
            f"verdicts agree at threshold {self.threshold:.6g}: {self.verdicts_agree}/{len(self.rows)} -> "
            + ("PASS" if self.ok else "FAIL")
        )

    def speed(self) -> str:
        """One line: mean milliseconds per image for each stage."""
        return "speed per image: " + ", ".join(f"{k} {v:.1f} ms" for k, v in self.ms_per_image.items())


def compare_outputs(ref: Outputs, cand: Outputs, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image |Δscore| and max |Δmap|; shapes must agree exactly."""
    if ref.score.shape != cand.score.shape or ref.anomaly_map.shape != cand.anomaly_map.shape:
        raise CheckFailed(
            f"{where}: output shapes differ: score {list(ref.score.shape)} vs {list(cand.score.shape)}, "
            f"anomaly_map {list(ref.anomaly_map.shape)} vs {list(cand.anomaly_map.shape)}"
        )
    ds = np.abs(ref.score.astype(np.float64) - cand.score.astype(np.float64))
    dm = (
        np.abs(ref.anomaly_map.astype(np.float64) - cand.anomaly_map.astype(np.float64))
        .reshape(len(ds), -1)
        .max(axis=1)
    )
    # NaN anywhere must fail, not vanish in a max().
    return np.where(np.isnan(ds), np.inf, ds), np.where(np.isnan(dm), np.inf, dm)


def run_parity(
    bundle: Bundle,
    reference: Backend,
    candidate: Backend,
    images: Sequence[Path],
    atol: float,
    *,
    progress: bool = True,
) -> ParityReport:
    """Run both loaded backends image by image (batch 1 fits every export) and compare."""
    from tqdm import tqdm

    pre = bundle.manifest.preprocess
    rows = []
    ref_name, cand_name = _label(reference), _label(candidate)
    spent = {"read+preprocess": 0.0, ref_name: 0.0, cand_name: 0.0}
    for path in tqdm(images, desc="parity", unit="img", disable=not progress, leave=False):
        t0 = time.perf_counter()
        batch = model_input(path, pre)
        t1 = time.perf_counter()
        ref = reference.infer(batch)
        t2 = time.perf_counter()
        cand = candidate.infer(batch)
        t3 = time.perf_counter()
        spent["read+preprocess"] += t1 - t0
        spent[ref_name] += t2 - t1
        spent[cand_name] += t3 - t2
        _, dm = compare_outputs(ref, cand, str(path))
        rows.append(ParityRow(str(path), float(ref.score[0]), float(cand.score[0]), float(dm[0])))
    ms = {k: 1000.0 * v / max(len(rows), 1) for k, v in spent.items()}
    report = ParityReport(tuple(rows), float(atol), float(bundle.manifest.threshold.value), ref_name, cand_name, ms)
    log.info(report.summary())
    return report


def _label(backend: Backend) -> str:
    d = backend.describe()
    return f"{d.get('backend', backend.name)}/{d.get('precision', '?')}"
