"""build-engine on a signed bundle (TensorRT stand-in): the engine entry and its file hash are
device additions, so the desktop signature stays valid and the bundle still loads under trust."""

from __future__ import annotations

import json

import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.cli import main
from edge_runtime.errors import BundleError
from edge_runtime.signing import sign_bundle
from tests.plugins.signing import make_keys
from tests.trt.helpers import calibrated_int8_argv, make_bundle, write_images


def test_engines_built_on_the_device_keep_the_signature(fake_trt10, tmp_path, capsys):
    keys = make_keys(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "b", with_int8=True)
    sign_bundle(load_bundle(bundle.root), keys.trusted_private)
    before = (bundle.root / "signature.json").read_bytes()
    trusted = ["--trusted-keys", str(keys.trusted_dir)]
    assert main(["build-engine", "--bundle", str(bundle.root), "--precision", "fp16", *trusted]) == 0
    calib = write_images(tmp_path / "calib", 4, size=16)
    assert main(calibrated_int8_argv(bundle.root, calib, 2, "--onnx", "fp32", "--calib-num", "4", *trusted)) == 0
    capsys.readouterr()
    b = load_bundle(bundle.root, trusted_keys=keys.trusted_dir)
    assert {e.precision for e in b.manifest.engines} == {"fp16", "int8"}
    assert "model.fp16.engine" in b.manifest.files and any(e.calibration_cache for e in b.manifest.engines)
    assert (bundle.root / "signature.json").read_bytes() == before  # nothing re-signed on the device

    # The device additions stay hash-checked: a swapped engine file is still refused.
    engine = bundle.root / "model.fp16.engine"
    engine.write_bytes(engine.read_bytes() + b"\0")
    with pytest.raises(
        BundleError, match=f"signed by key {keys.trusted_id}.*model.fp16.engine does not match its sha256"
    ):
        load_bundle(bundle.root, trusted_keys=keys.trusted_dir)


def test_build_engine_refuses_an_unsigned_bundle_when_keys_are_configured(fake_trt10, tmp_path, capsys):
    keys = make_keys(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "b")
    rc = main(
        ["build-engine", "--bundle", str(bundle.root), "--precision", "fp16", "--trusted-keys", str(keys.trusted_dir)]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "is not signed" in err and str(bundle.root) in err
    assert not (bundle.root / "model.fp16.engine").exists()
    assert json.loads((bundle.root / "manifest.json").read_text())["engines"] == []
