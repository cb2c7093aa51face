"""The torch reference backend through the Backend seam (entry point 'torch')."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.backends import make_backend
from edge_runtime.backends.base import Backend
from edge_runtime.bundle import load_bundle
from edge_runtime.errors import BackendUnavailable, DataError
from export.torch_backend import TorchBackend
from tests.plugins.bundles import copy_bundle


def test_registered_as_backend_and_runs(tiny_bundle):
    backend = make_backend("torch")
    assert isinstance(backend, TorchBackend) and isinstance(backend, Backend)
    bundle = load_bundle(tiny_bundle)
    backend.load(bundle, "fp32")
    h, w = bundle.manifest.preprocess.image_size
    batch = np.random.default_rng(0).integers(0, 256, size=(2, h, w, 3), dtype=np.uint8)
    out = backend.infer(batch)
    assert out.score.shape == (2,) and out.score.dtype == np.float32
    assert out.anomaly_map.shape == (2, *bundle.manifest.output("anomaly_map").shape[1:])
    # its own text embeddings (from the merged text tower) equal the shipped .npy
    np.testing.assert_allclose(backend.text_embeddings(), bundle.text_embeddings(), atol=1e-6)
    with pytest.raises(DataError, match=r"expected uint8 \[N,"):
        backend.infer(batch.astype(np.float32))
    backend.close()


def test_fp16_on_cpu_is_refused(tiny_bundle):
    with pytest.raises(BackendUnavailable, match="fp16 needs a CUDA device"):
        TorchBackend().load(tiny_bundle, "fp16")
    with pytest.raises(BackendUnavailable, match="int8"):
        TorchBackend().load(tiny_bundle, "int8")


def test_cuda_requested_without_gpu_is_refused(tiny_bundle):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        TorchBackend(device="cuda").load(tiny_bundle, "fp32")


def test_needs_a_merged_model(tiny_bundle, tmp_path):
    root = copy_bundle(tiny_bundle, tmp_path / "b")
    raw = json.loads((root / "manifest.json").read_text())
    raw["extra"].pop("merged_model")
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BackendUnavailable, match="names no merged model"):
        TorchBackend().load(root, "fp32")
    with pytest.raises(BackendUnavailable, match="merged model folder not found"):
        TorchBackend(merged=tmp_path / "gone").load(root, "fp32")
    with pytest.raises(BackendUnavailable, match="before load"):
        TorchBackend().infer(np.zeros((1, 8, 8, 3), np.uint8))
