"""verify-bundle runs the device's backends from the registry, not a runner of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_runtime.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bottle_dir(mvtec_root):
    return mvtec_root / "bottle" / "test"


def test_verify_bundle_picks_a_registered_backend_row(tiny_bundle, bottle_dir, shifted_backend, capsys):
    """One new table row is all verify-bundle needs; the shift it adds must show as a failure."""
    argv = ["-q", "verify-bundle", "--bundle", str(tiny_bundle), "--images", str(bottle_dir), "--max-images", "2"]
    assert main(argv + ["--backend", shifted_backend]) == 1
    out = capsys.readouterr().out
    assert "test-shift/fp32 vs torch/fp32 on 2 images" in out
    diff = float(out.split("max |Δscore| ")[1].split()[0])
    assert diff == pytest.approx(0.5, abs=1e-3)
    assert main(argv) == 0  # the default, ort-cpu: the same OrtBackend without the shift
    assert "ort-cpu/fp32 vs torch/fp32 on 2 images" in capsys.readouterr().out


def test_no_second_onnx_runtime_runner():
    """Sessions are opened by edge_runtime/backends only; export's self-check of the file it
    has just written (before a bundle exists) is the one exception."""
    allowed = {"edge_runtime/backends/onnxruntime.py", "export/onnx_export.py"}
    found = []
    for pkg in ("edge_runtime", "export", "calibration", "train", "deploy"):
        for path in (REPO / pkg).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel not in allowed and re.search(r"InferenceSession\(", path.read_text(encoding="utf-8")):
                found.append(rel)
    assert not found, f"second ONNX Runtime runner(s) in {found}; use edge_runtime.backends.make_backend"
