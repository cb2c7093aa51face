"""Helpers for the signed-bundle tests: key pairs and the five-case matrix of bundles.

Not a registered plugin (no fixtures): import the functions. Keys are real ed25519 keys made
by `edge_runtime.signing`, signatures real `cryptography` signatures.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.bundle import load_bundle
from edge_runtime.signing import generate_keypair, sign_bundle


@dataclass(frozen=True)
class Keys:
    trusted_dir: Path  # holds only the trusted key's .pub
    trusted_id: str
    trusted_private: Path
    other_id: str  # a well-formed key the station does not trust
    other_private: Path


def make_keys(root: Path) -> Keys:
    kid, priv, pub = generate_keypair(root / "signer")
    other_id, other_priv, _ = generate_keypair(root / "stranger")
    trusted = root / "trusted_keys"
    trusted.mkdir()
    shutil.copy(pub, trusted / pub.name)
    return Keys(trusted, kid, priv, other_id, other_priv)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def make_matrix(source: Path, out: Path, keys: Keys) -> dict[str, tuple[Path, list[str]]]:
    """Copies of the bundle at `source`: name -> (folder, fragments the refusal line must hold).
    'good' is signed by the trusted key; every other case must be refused."""
    cases: dict[str, tuple[Path, list[str]]] = {}

    def copy(name: str) -> Path:
        dst = out / name
        shutil.copytree(source, dst)
        (dst / "signature.json").unlink(missing_ok=True)
        return dst

    good = copy("good")
    sign_bundle(load_bundle(good), keys.trusted_private)
    cases["good"] = (good, [])

    unsigned = copy("unsigned")
    cases["unsigned"] = (unsigned, [str(unsigned), "is not signed", str(keys.trusted_dir)])

    manifest = copy("tampered_manifest")
    sign_bundle(load_bundle(manifest), keys.trusted_private)
    raw = json.loads((manifest / "manifest.json").read_text())
    raw["threshold"]["value"] = 0.99  # what an attacker would change: let defects pass
    (manifest / "manifest.json").write_text(json.dumps(raw, indent=2))
    cases["tampered_manifest"] = (manifest, [str(manifest), f"signature by key {keys.trusted_id} does not match"])

    tampered = copy("tampered_file")
    sign_bundle(load_bundle(tampered), keys.trusted_private)
    _flip_byte(tampered / "model.onnx")
    cases["tampered_file"] = (
        tampered,
        [str(tampered), f"signed by key {keys.trusted_id}", "model.onnx does not match its sha256"],
    )

    wrong = copy("wrong_key")
    sign_bundle(load_bundle(wrong), keys.other_private)
    cases["wrong_key"] = (wrong, [str(wrong), f"signed by key {keys.other_id}", "not among the trusted keys"])
    return cases
