from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.bundle import SCHEMA_VERSION, PreprocessSpec, TensorSpec, load_bundle
from edge_runtime.errors import BundleError
from tests.plugins.edge import write_test_manifest


def _bundle(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not really onnx, only hashed here")
    np.save(tmp_path / "text_embeddings.npy", np.eye(2, 4, dtype=np.float32))
    write_test_manifest(
        tmp_path,
        model_id="t",
        clip_source="tiny",
        preprocess=PreprocessSpec(image_size=(32, 32)),
        inputs=(TensorSpec("image", (1, 32, 32, 3), "uint8"), TensorSpec("text_embeddings", (2, 4), "float32")),
        outputs=(TensorSpec("score", (1,), "float32"), TensorSpec("anomaly_map", (1, 4, 4), "float32")),
    )
    return tmp_path


def test_roundtrip(tmp_path):
    b = load_bundle(_bundle(tmp_path))
    assert b.manifest.preprocess.image_size == (32, 32)
    assert b.manifest.input("image").dtype == "uint8"
    assert b.text_embeddings().shape == (2, 4)
    assert len(b.manifest_sha256) == 64


def test_tampered_file_refused_naming_it(tmp_path):
    root = _bundle(tmp_path)
    data = bytearray((root / "model.onnx").read_bytes())
    data[3] ^= 1
    (root / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx does not match its sha256"):
        load_bundle(root)


def test_newer_schema_refused(tmp_path):
    root = _bundle(tmp_path)
    raw = json.loads((root / "manifest.json").read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="newer than this runtime supports"):
        load_bundle(root)


def test_unknown_manifest_key_and_missing_file(tmp_path):
    root = _bundle(tmp_path)
    raw = json.loads((root / "manifest.json").read_text())
    raw["thresold"] = 1
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="unknown config key 'thresold'"):
        load_bundle(root)
    root2 = _bundle(tmp_path / "b2" if (tmp_path / "b2").mkdir() is None else None)
    (root2 / "text_embeddings.npy").unlink()
    with pytest.raises(BundleError, match="bundle file missing"):
        load_bundle(root2)


def test_missing_int8_variant_says_how(tmp_path):
    b = load_bundle(_bundle(tmp_path))
    with pytest.raises(BundleError, match="clipinspect calibrate"):
        b.model_path("int8")
