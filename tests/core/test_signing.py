"""Signed bundles with real ed25519 keys: keygen, sign, and the refusal matrix (unsigned,
tampered manifest, tampered file, unknown key) through `python -m edge_runtime.bundle`,
`clipinspect run`, `clipinspect doctor` and deploy/jetson/rollout.sh --host local."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from edge_runtime import signing
from edge_runtime.bundle import load_bundle, parse_manifest, with_file, write_manifest
from edge_runtime.bundle import main as bundle_main
from edge_runtime.cli import main
from edge_runtime.errors import BundleError, ConfigError
from tests.deploy.helpers import local_rollout_cmd
from tests.plugins.signing import make_keys, make_matrix

REPO = Path(__file__).resolve().parents[2]
REFUSED = ["unsigned", "tampered_manifest", "tampered_file", "wrong_key"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def matrix(toy_bundle_factory, keys, tmp_path_factory):
    src = toy_bundle_factory()
    return make_matrix(src.root, tmp_path_factory.mktemp("matrix"), keys)


def _one_error_line(err: str, prefix: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(prefix) and "Traceback" not in err
    return lines[0]


def test_keygen_writes_private_0600_and_public_named_by_key_id(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    (priv,) = (tmp_path / "k").glob("*.key")
    (pub,) = (tmp_path / "k").glob("*.pub")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = signing.load_public_key(pub)
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = hashlib.sha256(raw).hexdigest()[:16]
    assert pub.stem == priv.stem == kid and kid in out
    assert signing.key_id(signing.load_private_key(priv).public_key()) == kid


def test_python_m_bundle_matrix(matrix, keys, capsys):
    for name, (root, fragments) in matrix.items():
        rc = bundle_main([str(root), "--trusted-keys", str(keys.trusted_dir)])
        cap = capsys.readouterr()
        if name == "good":
            assert rc == 0, cap.err
            assert f"signed by key {keys.trusted_id}" in cap.out
            continue
        assert rc == 2, name
        line = _one_error_line(cap.err, "bundle check failed: ")
        for frag in fragments:
            assert frag in line, (name, line)


def test_unsigned_bundle_still_loads_without_trusted_keys(matrix, capsys):
    root, _ = matrix["unsigned"]
    assert bundle_main([str(root)]) == 0
    assert "unsigned (signature not checked: no trusted keys)" in capsys.readouterr().out


def test_run_matrix(matrix, keys, tmp_path, capsys):
    for name, (root, fragments) in matrix.items():
        out = tmp_path / f"{name}.jsonl"
        argv = [
            "run",
            "--bundle",
            str(root),
            "--trusted-keys",
            str(keys.trusted_dir),
            "--source",
            "synthetic://?width=64&height=64",
            "--publish",
            f"jsonl://{out}",
            "--max-frames",
            "2",
            "--set",
            "pipeline.drop_policy=block",
        ]
        rc = main(argv)
        cap = capsys.readouterr()
        if name == "good":
            assert rc == 0, cap.err
            assert len(out.read_text().splitlines()) == 2
            continue
        assert rc == 2, name
        line = [ln for ln in cap.err.splitlines() if ": error: " in ln]
        assert len(line) == 1 and "Traceback" not in cap.err, cap.err
        for frag in fragments:
            assert frag in line[0], (name, line[0])
        assert not out.exists()


def test_run_takes_trusted_keys_from_the_config(matrix, keys, tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"bundle: {{trusted_keys: {keys.trusted_dir}}}\n")
    root, _ = matrix["wrong_key"]
    rc = main(
        [
            "run",
            "--config",
            str(cfg),
            "--bundle",
            str(root),
            "--source",
            "synthetic://",
            "--publish",
            "stdout://",
            "--max-frames",
            "1",
        ]
    )
    assert rc == 2 and f"signed by key {keys.other_id}" in capsys.readouterr().err


def test_trusted_keys_folder_errors_are_one_line(matrix, tmp_path, capsys):
    root, _ = matrix["good"]
    assert bundle_main([str(root), "--trusted-keys", str(tmp_path / "missing")]) == 2
    assert "trusted keys folder not found" in _one_error_line(capsys.readouterr().err, "bundle check failed: ")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        load_bundle(root, trusted_keys=tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="x.pub is not a PEM public key"):
        load_bundle(root, trusted_keys=tmp_path / "junk")


def test_rehashed_file_and_hidden_desktop_file_break_the_signature(matrix, keys, tmp_path):
    from edge_runtime.bundle import EngineEntry

    root = tmp_path / "b"
    shutil.copytree(matrix["good"][0], root)
    # An attacker who swaps model.onnx and fixes its hash in the manifest still fails.
    (root / "model.onnx").write_bytes((root / "model.onnx").read_bytes() + b"\0")
    m = load_bundle(root, verify=False).manifest
    write_manifest(root, with_file(m, root, "model.onnx"))
    load_bundle(root)  # the hashes agree now ...
    with pytest.raises(BundleError, match=f"signature by key {keys.trusted_id} does not match"):
        load_bundle(root, trusted_keys=keys.trusted_dir)  # ... the signature does not

    # A fake "device" engine entry that names a signed file takes it out of the signed part.
    root2 = tmp_path / "b2"
    shutil.copytree(matrix["good"][0], root2)
    m = load_bundle(root2).manifest
    fake = EngineEntry(
        file="model.onnx",
        precision="fp16",
        source_onnx="model.onnx",
        tensorrt_version="10",
        gpu_name="x",
        compute_capability="8.7",
    )
    write_manifest(root2, replace(m, engines=(fake,)))
    with pytest.raises(BundleError, match="does not match the manifest"):
        load_bundle(root2, trusted_keys=keys.trusted_dir)


def test_rewriting_the_manifest_with_every_default_keeps_the_signature(matrix, keys, tmp_path):
    """The device rewrites manifest.json through the dataclasses (all fields, its own field
    order); the signed bytes must not change as long as the desktop part does not."""
    root = tmp_path / "b"
    shutil.copytree(matrix["good"][0], root)
    raw = json.loads((root / "manifest.json").read_text())
    reordered = dict(reversed(list(raw.items())))
    m = parse_manifest(reordered)
    (root / "manifest.json").write_text(json.dumps(reordered, indent=None))
    assert load_bundle(root, trusted_keys=keys.trusted_dir).manifest == m
    sparse = {k: v for k, v in raw.items() if k not in ("variants", "engines", "extra", "opset")}
    (root / "manifest.json").write_text(json.dumps(sparse))
    assert raw["variants"] == [] and raw["opset"] == 17 and raw["extra"] == {} and raw["engines"] == []
    load_bundle(root, trusted_keys=keys.trusted_dir)  # defaults left out: same signed bytes


def test_doctor_names_the_signer(matrix, keys, capsys):
    root, _ = matrix["good"]
    rc = main(["doctor", "--bundle", str(root), "--trusted-keys", str(keys.trusted_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    (check,) = [c for c in report["checks"] if c["name"] == "bundle"]
    assert check["status"] == "ok" and f"signed by key {keys.trusted_id}" in check["detail"]
    assert check["data"]["signer_key_id"] == keys.trusted_id
    main(["doctor", "--bundle", str(matrix["wrong_key"][0]), "--trusted-keys", str(keys.trusted_dir)])
    out = capsys.readouterr().out
    assert "FAIL" in out and f"signed by key {keys.other_id}" in out
    assert rc in (0, 1)  # other checks (backends, SDKs) depend on the machine


def test_sign_cli_refuses_a_bundle_whose_hashes_do_not_match(matrix, keys, tmp_path, capsys):
    root = tmp_path / "b"
    shutil.copytree(matrix["tampered_file"][0], root)
    assert main(["sign", "--bundle", str(root), "--key", str(keys.trusted_private)]) == 2
    assert "model.onnx does not match its sha256" in capsys.readouterr().err
    good = tmp_path / "g"
    shutil.copytree(matrix["unsigned"][0], good)
    assert main(["sign", "--bundle", str(good), "--key", str(keys.trusted_private)]) == 0
    assert f"with key {keys.trusted_id}" in capsys.readouterr().out
    load_bundle(good, trusted_keys=keys.trusted_dir)


def test_keygen_and_sign_file_errors_are_one_line(matrix, keys, tmp_path, capsys):
    # /proc refuses a new folder even to root: keygen must say so in one line, not a traceback.
    assert main(["keygen", "--out", "/proc/clipinspect-no-such-dir"]) == 2
    assert "cannot write keys into /proc/clipinspect-no-such-dir" in _one_error_line(
        capsys.readouterr().err, "clipinspect"
    )
    # a signing key path that is a folder, not a key file
    assert main(["sign", "--bundle", str(matrix["unsigned"][0]), "--key", str(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err, "clipinspect")
    # signature.json cannot be replaced (a folder stands there): one line, no temp file left
    root = tmp_path / "b"
    shutil.copytree(matrix["unsigned"][0], root)
    (root / "signature.json").mkdir()
    assert main(["sign", "--bundle", str(root), "--key", str(keys.trusted_private)]) == 2
    assert "cannot write signature.json" in _one_error_line(capsys.readouterr().err, "clipinspect")
    assert not (root / ".signature.json.tmp").exists()


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed")
def test_rollout_matrix(matrix, keys, tmp_path):
    for name, (root, fragments) in matrix.items():
        station = tmp_path / name
        health = ("--health-cmd", "test -f {current}/manifest.json", "--health-timeout", "0")
        cmd = local_rollout_cmd(
            station, root, "--restart-cmd", "true", *health, "--trusted-keys", str(keys.trusted_dir)
        )
        r = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        if name == "good":
            assert r.returncode == 0, r.stderr
            assert (station / "current" / "signature.json").is_file()
            continue
        assert r.returncode == 2, (name, r.stderr)
        checks = [ln for ln in r.stderr.splitlines() if ln.startswith("bundle check failed: ")]
        assert len(checks) == 1, r.stderr
        for frag in fragments:
            assert frag.replace(str(root), "") in checks[0], (name, checks[0])  # the path is the target's copy
        assert "nothing was switched" in r.stderr and not (station / "current").exists()


def test_provisioned_default_folder_enforces_once_it_holds_a_key(matrix, keys, tmp_path, monkeypatch, capsys):
    default = tmp_path / "etc_trusted_keys"
    default.mkdir()
    monkeypatch.setattr(signing, "DEFAULT_TRUSTED_KEYS", default)
    assert signing.resolve_trusted_keys() is None  # created empty by provisioning: not enforced (logged)
    assert bundle_main([str(matrix["unsigned"][0])]) == 0
    shutil.copy(next(keys.trusted_dir.glob("*.pub")), default)
    assert signing.resolve_trusted_keys() == default
    assert signing.resolve_trusted_keys(configured=tmp_path / "cfg") == tmp_path / "cfg"  # config beats the default
    capsys.readouterr()
    assert bundle_main([str(matrix["unsigned"][0])]) == 2
    assert "is not signed" in capsys.readouterr().err
    assert bundle_main([str(matrix["good"][0])]) == 0


def test_a_malformed_signature_file_is_one_line(matrix, keys, tmp_path, capsys):
    root = tmp_path / "b"
    shutil.copytree(matrix["good"][0], root)
    doc = json.loads((root / "signature.json").read_text())
    doc["key_id"] = "abc\nforged line"
    (root / "signature.json").write_text(json.dumps(doc))
    assert bundle_main([str(root), "--trusted-keys", str(keys.trusted_dir)]) == 2
    line = _one_error_line(capsys.readouterr().err, "bundle check failed: ")
    assert "unreadable signature.json" in line and str(root) in line
