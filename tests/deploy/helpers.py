"""Helpers shared by the deploy tests: a tiny bundle to roll out and `rollout.sh` against a local
stand-in device (`--host local`, a folder as the station root)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge_runtime.bundle import PreprocessSpec, TensorSpec
from tests.plugins.edge import write_test_manifest

REPO = Path(__file__).resolve().parents[2]
ROLLOUT = REPO / "deploy" / "jetson" / "rollout.sh"
STATION_SH = REPO / "deploy" / "jetson" / "station.sh"


def make_bundle(root: Path, tag: str) -> Path:
    """Write a minimal valid bundle at `root` whose model.onnx holds the text "model <tag>"; return `root`."""
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(f"model {tag}".encode())
    np.save(root / "text_embeddings.npy", np.eye(2, 4, dtype=np.float32))
    write_test_manifest(
        root,
        model_id=tag,
        clip_source="tiny",
        preprocess=PreprocessSpec(image_size=(32, 32)),
        inputs=(TensorSpec("image", (1, 32, 32, 3), "uint8"),),
        outputs=(TensorSpec("score", (1,), "float32"),),
    )
    return root


def local_rollout_cmd(station: Path, bundle: Path, *extra: str) -> list[str]:
    """`rollout.sh` argv that installs `bundle` into the station folder `station` on this host: no
    engine build, this Python, this checkout's station.sh; then `extra`."""
    return [
        *("bash", str(ROLLOUT), "--host", "local", "--root", str(station), "--bundle", str(bundle)),
        *("--precision", "none", "--python", sys.executable, "--station-sh", str(STATION_SH)),
        *extra,
    ]
