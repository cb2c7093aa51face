"""Bundle writer: staged, hashed, atomic; refuses to clobber; manifest readable by the runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.bundle import PreprocessSpec, TensorSpec, Threshold, load_bundle
from edge_runtime.errors import BundleError, DataError
from export.bundle_writer import BundleWriter, library_versions, make_manifest, prompts_mapping
from export.text_embeddings import load_text_embeddings, save_text_embeddings


def _manifest(**kw):
    args = dict(
        model_id="m-1",
        clip_source="/clip",
        preprocess=PreprocessSpec(image_size=(16, 16)),
        inputs=(TensorSpec("image", (1, 16, 16, 3), "uint8"), TensorSpec("text_embeddings", (2, 4), "float32")),
        outputs=(TensorSpec("score", (1,), "float32"), TensorSpec("anomaly_map", (1, 2, 2), "float32")),
        threshold=Threshold(0.4, "f1-max on eval"),
        prompts=("good thing", "bad thing"),
        baked_text=False,
        opset=17,
        extra={"merged_model": "/abs/merged"},
    )
    args.update(kw)
    return make_manifest(**args)


def _write(out, payload=b"onnx bytes", overwrite=False):
    with BundleWriter(out, overwrite=overwrite) as w:
        w.path("model.onnx").write_bytes(payload)
        save_text_embeddings(w.path("text_embeddings.npy"), np.ones((2, 4), np.float32))
        return w.commit(_manifest())


def test_commit_hashes_every_file_and_loads_back(tmp_path):
    bundle = _write(tmp_path / "b")
    m = bundle.manifest
    assert set(m.files) == {"model.onnx", "text_embeddings.npy"}
    assert m.files["model.onnx"].bytes == len(b"onnx bytes")
    assert m.text.prompts == {"normal": "good thing", "abnormal": "bad thing"}
    assert m.extra["merged_model"] == "/abs/merged"
    for dist in ("torch", "onnx", "onnxruntime", "clipinspect"):
        assert m.versions[dist] and m.versions[dist] != "not installed"
    raw = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert raw["schema"] == "clipinspect.bundle" and raw["schema_version"] == 1
    # no staging folder is left behind
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    assert load_bundle(tmp_path / "b").text_embeddings().shape == (2, 4)


def test_existing_bundle_needs_overwrite_and_is_replaced_whole(tmp_path):
    _write(tmp_path / "b")
    (tmp_path / "b" / "model.int8.onnx").write_bytes(b"stale variant")
    with pytest.raises(BundleError, match=r"already exists .*--force"):
        _write(tmp_path / "b", payload=b"new")
    bundle = _write(tmp_path / "b", payload=b"new", overwrite=True)
    assert (tmp_path / "b" / "model.onnx").read_bytes() == b"new"
    assert not (tmp_path / "b" / "model.int8.onnx").exists()
    assert bundle.manifest.files["model.onnx"].bytes == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_failure_before_commit_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with BundleWriter(tmp_path / "b") as w:
            w.path("model.onnx").write_bytes(b"half")
            raise RuntimeError("export crashed")
    assert list(tmp_path.iterdir()) == []


def test_bad_names_and_prompts_refused(tmp_path):
    with BundleWriter(tmp_path / "b") as w:
        for bad in ("../x", "/etc/passwd", "manifest.json"):
            with pytest.raises(BundleError, match="bad bundle file name"):
                w.path(bad)
    with pytest.raises(BundleError, match="normal/abnormal pair"):
        prompts_mapping(("only one",))
    assert prompts_mapping({"normal": "a", "abnormal": "b"}) == {"normal": "a", "abnormal": "b"}


def test_baked_manifest_has_no_embeddings_input_file():
    m = _manifest(baked_text=True)
    assert m.text.baked and m.text.embeddings_file is None


def test_text_embeddings_file_checks(tmp_path):
    p = save_text_embeddings(tmp_path / "t.npy", np.arange(8, dtype=np.float32).reshape(2, 4))
    assert load_text_embeddings(p).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(DataError, match=r"shape \[2, D\]"):
        save_text_embeddings(tmp_path / "bad.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(DataError, match="NaN"):
        save_text_embeddings(tmp_path / "bad.npy", np.full((2, 4), np.nan, np.float32))
    # a pickled object array is refused, not unpickled
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BundleError, match="obj.npy"):
        load_text_embeddings(tmp_path / "obj.npy")


def test_library_versions_names_clipinspect():
    assert library_versions()["clipinspect"] == "0.1.0"


def test_unwritable_output_is_a_bundle_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BundleError, match="cannot write bundle to"):
        BundleWriter(blocker / "sub" / "b")
    with pytest.raises(BundleError, match="exists and is not a folder"):
        BundleWriter(blocker)
