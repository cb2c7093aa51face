"""Fixtures for the bundle area (owner H3): a real export of H1's merged tiny model.

`tiny_bundle` is what `clipinspect export --merged <merged_tiny_dir>` writes with default
options (uint8 NHWC input, static batch 1, text embeddings as an input). Built once per
session (about 2 s). Tests that modify a bundle must copy it first (`copy_bundle`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def export_tiny(merged_dir: Path, out: Path, **options):
    """Export `merged_dir` to `out` with ExportOptions(**options); returns the loaded Bundle."""
    from export.exporter import export_bundle
    from export.onnx_export import ExportOptions

    return export_bundle(merged_dir, out, ExportOptions(**options))


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_bundle(merged_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle folder exported from `merged_tiny_dir` (manifest extra.merged_model points
    back at it, so the torch reference backend works)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
    export_tiny(merged_tiny_dir, out)
    return out


RAW_FORMAT, RAW_SIZE_HW, RAW_ROI = "bayer_rg8", (100, 180), (10, 6, 160, 88)


@pytest.fixture(scope="session")
def tiny_raw_bundle(merged_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw-frame bundle of the same merged tiny model: 180x100 BayerRG8 frames with an ROI
    (what `clipinspect export --input-format bayer_rg8 --input-size 180x100 --roi 10,6,160,88`
    writes)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny_raw_bundle") / "bundle"
    export_tiny(merged_tiny_dir, out, input_format=RAW_FORMAT, input_size=RAW_SIZE_HW, roi=RAW_ROI)
    return out
