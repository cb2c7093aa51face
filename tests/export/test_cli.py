"""`clipinspect export` and `clipinspect verify-bundle` through the real CLI front door:
exit codes (0 ok, 1 check failed, 2 user error) and one-line messages naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.cli import main
from edge_runtime.errors import BundleError
from tests.plugins.bundles import copy_bundle


def _err_line(capsys, command):
    """The one error line (progress bars from model loading may precede it on stderr)."""
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert errors[0].startswith(f"clipinspect {command}: error: ")
    assert "Traceback" not in "\n".join(err)
    return errors[0]


@pytest.fixture(scope="module")
def bottle_dir(mvtec_root):
    return mvtec_root / "bottle" / "test"


def test_verify_bundle_passes(tiny_bundle, bottle_dir, capsys):
    rc = main(["-q", "verify-bundle", "--bundle", str(tiny_bundle), "--images", str(bottle_dir), "--max-images", "4"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "max |Δscore|" in out and "max |Δmap|" in out and "verdicts agree at threshold 0.5: 4/4" in out
    assert "PASS" in out and "speed per image: read+preprocess" in out


def test_verify_bundle_fails_against_a_different_model(tiny_bundle, bottle_dir, tiny_clip_dir, tmp_path, capsys):
    """Parity must be able to fail: the reference is a merged model with other LoRA weights."""
    from tests.plugins.models import build_tiny_model
    from train.merged import save_merged

    model, loaded = build_tiny_model(tiny_clip_dir, seed=7)
    other = tmp_path / "other_merged"
    save_merged(model, other, clip_source=str(tiny_clip_dir), mean=loaded.mean, std=loaded.std, name="other")
    argv = [
        "-q",
        "verify-bundle",
        "--bundle",
        str(tiny_bundle),
        "--images",
        str(bottle_dir),
        "--max-images",
        "3",
        "--merged",
        str(other),
    ]
    rc = main(argv)
    assert rc == 1
    assert "beyond atol 0.0001" in _err_line(capsys, "verify-bundle")


def test_verify_bundle_refuses_tampered_model(tiny_bundle, bottle_dir, tmp_path, capsys):
    root = copy_bundle(tiny_bundle, tmp_path / "b")
    data = bytearray((root / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx does not match its sha256"):
        load_bundle(root)
    rc = main(["verify-bundle", "--bundle", str(root), "--images", str(bottle_dir)])
    assert rc == 2
    line = _err_line(capsys, "verify-bundle")
    assert str(root / "model.onnx") in line and "sha256" in line


def test_verify_bundle_refuses_tampered_embeddings(tiny_bundle, bottle_dir, tmp_path, capsys):
    root = copy_bundle(tiny_bundle, tmp_path / "b")
    arr = np.load(root / "text_embeddings.npy")
    arr[0, 0] += 1e-3
    np.save(root / "text_embeddings.npy", arr)
    assert main(["verify-bundle", "--bundle", str(root), "--images", str(bottle_dir)]) == 2
    assert "text_embeddings.npy does not match its sha256" in _err_line(capsys, "verify-bundle")


def test_newer_schema_refused(tiny_bundle, bottle_dir, tmp_path, capsys):
    root = copy_bundle(tiny_bundle, tmp_path / "b")
    raw = json.loads((root / "manifest.json").read_text())
    raw["schema_version"] = 99
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema version 99 is newer"):
        load_bundle(root)
    assert main(["verify-bundle", "--bundle", str(root), "--images", str(bottle_dir)]) == 2
    assert "schema version 99" in _err_line(capsys, "verify-bundle")


def test_verify_bundle_user_errors(tiny_bundle, tmp_path, capsys):
    assert main(["verify-bundle", "--bundle", str(tmp_path / "none"), "--images", str(tmp_path)]) == 2
    assert "bundle folder not found" in _err_line(capsys, "verify-bundle")
    assert main(["verify-bundle", "--bundle", str(tiny_bundle), "--images", str(tmp_path / "none")]) == 2
    assert "image folder not found" in _err_line(capsys, "verify-bundle")
    assert main(["verify-bundle", "--bundle", str(tiny_bundle), "--images", str(tmp_path), "--precision", "int8"]) == 2
    assert "has no int8 ONNX model" in _err_line(capsys, "verify-bundle")


def test_export_missing_merged_folder(tmp_path, capsys):
    rc = main(["export", "--merged", str(tmp_path / "no_such_merged"), "--out", str(tmp_path / "b")])
    assert rc == 2
    assert "merged model folder not found" in _err_line(capsys, "export")
    assert not (tmp_path / "b").exists()


def test_export_not_a_merged_folder_and_bad_opset(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["export", "--merged", str(tmp_path / "empty"), "--out", str(tmp_path / "b")]) == 2
    assert "not a merged clipinspect model" in _err_line(capsys, "export")
    assert main(["export", "--merged", str(tmp_path / "empty"), "--out", str(tmp_path / "b"), "--opset", "13"]) == 2
    assert "--opset must be >= 17" in _err_line(capsys, "export")
    assert main(["export", "--merged", str(tmp_path / "empty"), "--out", str(tmp_path / "b"), "--opset", "21"]) == 2
    assert "<= 20" in _err_line(capsys, "export")


def test_export_cli_writes_bundle_and_refuses_overwrite(merged_tiny_dir, tmp_path, capsys):
    out = tmp_path / "bundle"
    argv = [
        "-q",
        "export",
        "--merged",
        str(merged_tiny_dir),
        "--out",
        str(out),
        "--dynamic-batch",
        "--threshold",
        "0.61",
        "--threshold-method",
        "picked by hand",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "input      image" in printed and "['batch'," in printed and "threshold  0.61 (picked by hand)" in printed
    b = load_bundle(out)
    assert b.manifest.threshold.value == 0.61 and b.manifest.input("image").shape[0] == "batch"
    assert b.manifest.extra["export"]["dynamic_batch"] is True
    assert main(argv) == 2
    assert "already exists" in _err_line(capsys, "export")
    assert main(argv[:-4] + ["--force"]) == 0
    assert load_bundle(out).manifest.threshold.value == 0.5  # back to the merged model's own


def _add_perturbed_variant(root, precision="fp16", scale=1e-3):
    """A variant graph whose weights differ slightly from the FP32 export (what a lower
    precision does to a model), listed in the manifest with its hash like a real variant."""
    from dataclasses import replace

    import onnx
    from onnx import numpy_helper

    from edge_runtime.bundle import ModelVariant, with_file, write_manifest

    proto = onnx.load(str(root / "model.onnx"))
    rng = np.random.default_rng(0)
    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.ndim == 2 and arr.size >= 1024:
            init.CopyFrom(
                numpy_helper.from_array(
                    (arr * (1 + scale * rng.standard_normal(arr.shape))).astype(np.float32), init.name
                )
            )
    name = f"model.{precision}.onnx"
    onnx.save(proto, str(root / name))
    m = load_bundle(root).manifest
    m = replace(
        m, variants=m.variants + (ModelVariant(file=name, precision=precision, notes="test: perturbed weights"),)
    )
    write_manifest(root, with_file(m, root, name))


def test_verify_bundle_checks_a_variant_with_its_own_tolerance(tiny_bundle, bottle_dir, tmp_path, capsys):
    root = copy_bundle(tiny_bundle, tmp_path / "b")
    _add_perturbed_variant(root)
    base = [
        "-q",
        "verify-bundle",
        "--bundle",
        str(root),
        "--images",
        str(bottle_dir),
        "--max-images",
        "3",
        "--precision",
        "fp16",
    ]
    assert main(base) == 0  # within the fp16 default 1e-2
    out = capsys.readouterr().out
    assert "ort-cpu/fp16 vs torch/fp32" in out and "(atol 0.01)" in out
    # the variant really differs from the FP32 graph, so an FP32 tolerance is impossible
    score_diff = float(out.split("max |Δscore| ")[1].split()[0])
    assert 1e-6 < score_diff < 1e-2
    assert main(base + ["--atol", "0"]) == 1
    assert "beyond atol 0" in _err_line(capsys, "verify-bundle")
    assert main(base + ["--atol", "-1"]) == 2
    assert "--atol must be >= 0" in _err_line(capsys, "verify-bundle")


def test_verify_bundle_other_backend_is_never_substituted(tiny_bundle, bottle_dir, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has ONNX Runtime CUDA")
    assert (
        main(["verify-bundle", "--bundle", str(tiny_bundle), "--images", str(bottle_dir), "--backend", "ort-cuda"]) == 2
    )
    assert "CUDAExecutionProvider" in _err_line(capsys, "verify-bundle")


def test_verify_bundle_through_the_backend_registry(tiny_bundle, bottle_dir, capsys):
    """A candidate from make_backend (here the torch entry point itself): identical -> 0 diff."""
    rc = main(
        [
            "-q",
            "verify-bundle",
            "--bundle",
            str(tiny_bundle),
            "--images",
            str(bottle_dir),
            "--max-images",
            "2",
            "--backend",
            "torch",
            "--atol",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "torch/fp32 vs torch/fp32 on 2 images" in out
