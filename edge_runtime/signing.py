"""Signed bundles: ed25519 over the desktop part of the manifest.

The rule (also in README, "Signed bundles"):

- The manifest already holds the sha256 of every file, so signing the manifest signs the files.
- What is signed is the manifest's *desktop part*: the parsed manifest as canonical JSON
  (sorted keys, no whitespace, fields equal to their default left out so that a runtime that
  knows more optional fields reads the same bytes) WITHOUT `engines` and without the `files`
  entries that an engine names (its engine file and calibration cache). Those are the device
  additions: `build-engine` writes them on the target, after signing, and they stay hash-checked
  but unsigned. An engine is therefore exactly as trustworthy as the station that built it,
  and its `source_onnx` must be a signed file.
- An engine entry that names a signed file (say `model.onnx`) takes that file out of the
  desktop part, so the signature no longer matches: a device addition cannot hide a desktop
  file from the signature.
- The signature lives beside the manifest in `signature.json` (key id, algorithm, base64
  signature over `DOMAIN + payload`). Anything the desktop changes after signing (calibrate,
  enroll, a hand edit) needs `clipinspect sign` again.
- Trust is a folder of public keys (`*.pub`, PEM). When one is configured (flag, config key
  `bundle.trusted_keys`, or `/etc/clipinspect/trusted_keys/` once it holds a key), an unsigned
  bundle, a signature that does not match, or a key not in the folder is refused with one
  line naming the bundle and the key id. With no folder configured, bundles load as before.

`cryptography` is imported only when keys are used, so `import edge_runtime` stays light.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import BundleError, ConfigError, MissingDependency, first_line

if TYPE_CHECKING:
    from edge_runtime.bundle import Bundle

SIGNATURE = "signature.json"
SIGNATURE_SCHEMA = "clipinspect.signature"
ALGORITHM = "ed25519"
# Domain separation: these bytes are never a valid signature over anything else we sign.
DOMAIN = b"clipinspect.bundle.manifest.v1\n"
DEFAULT_TRUSTED_KEYS = Path("/etc/clipinspect/trusted_keys")
log = logging.getLogger(__name__)
SIGNED_PART = "manifest.json without engines and the files they name (canonical JSON, defaults omitted)"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingDependency(
            "bundle signatures need the 'cryptography' package: pip install 'clipinspect[edge]'"
        ) from None
    return ed25519


def _serialization() -> Any:
    _crypto()
    from cryptography.hazmat.primitives import serialization

    return serialization


def key_id(public_key: Any) -> str:
    """First 16 hex digits of sha256 over the raw 32-byte public key."""
    s = _serialization()
    raw = public_key.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: str | Path) -> tuple[str, Path, Path]:
    """Write `<key_id>.key` (PKCS#8 PEM, mode 0600) and `<key_id>.pub` into `out_dir`.

    Returns:
        (key id, private key path, public key path).

    Raises:
        ConfigError: either file already exists (a key is never overwritten), or the folder
            cannot be created or written.
        MissingDependency: the `cryptography` package is not installed.
    """
    ed25519, s = _crypto(), _serialization()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _write_keypair(ed25519, s, out)
    except OSError as exc:
        raise ConfigError(f"cannot write keys into {out}: {first_line(exc)}") from None


def _write_keypair(ed25519: Any, s: Any, out: Path) -> tuple[str, Path, Path]:
    """Generate the key pair and write both files into the existing folder `out`."""
    private = ed25519.Ed25519PrivateKey.generate()
    kid = key_id(private.public_key())
    priv_path, pub_path = out / f"{kid}.key", out / f"{kid}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise ConfigError(f"{p} already exists; refusing to overwrite a key")
    pem = private.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    # Created 0600 from the start: the private key is never readable by others, not even briefly.
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(priv_path, 0o600)  # in case the umask or an existing ACL widened it
    pub_path.write_bytes(private.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))
    return kid, priv_path, pub_path


def load_private_key(path: str | Path) -> Any:
    """Load the unencrypted PEM ed25519 private key `sign` uses.

    Raises:
        ConfigError: the file is missing, not a PEM private key, or not ed25519.
        MissingDependency: the `cryptography` package is not installed.
    """
    ed25519, s = _crypto(), _serialization()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"signing key not found: {p}")
    try:
        key = s.load_pem_private_key(p.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"signing key {p} cannot be read: {first_line(exc)}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{p} is not an unencrypted PEM private key ({first_line(exc)})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{p} is not an ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Any:
    """Load one trusted `*.pub` (PEM ed25519 public key).

    Raises:
        ConfigError: unreadable, not a PEM public key, or not ed25519.
        MissingDependency: the `cryptography` package is not installed.
    """
    ed25519, s = _crypto(), _serialization()
    p = Path(path)
    try:
        key = s.load_pem_public_key(p.read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"trusted key {p} is not a PEM public key ({first_line(exc)})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"trusted key {p} is not an ed25519 public key")
    return key


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a station accepts signatures from, by key id, and the folder they came from (for messages)."""

    folder: Path
    keys: Mapping[str, Any]  # key id -> Ed25519PublicKey (ids computed from the keys, not file names)


def load_trusted_keys(folder: str | Path) -> TrustedKeys:
    """Every `*.pub` in `folder`. A missing or empty folder is an error: trusting nothing
    would refuse every bundle, and a typo in the path must not look like 'no keys'.

    Raises:
        ConfigError: the folder is missing, holds no `*.pub`, or one of them is not an
            ed25519 public key.
    """
    f = Path(folder)
    if not f.is_dir():
        raise ConfigError(f"trusted keys folder not found: {f}")
    keys = {}
    for p in sorted(f.glob("*.pub")):
        key = load_public_key(p)
        keys[key_id(key)] = key
    if not keys:
        raise ConfigError(f"trusted keys folder {f} holds no *.pub public keys")
    return TrustedKeys(folder=f, keys=keys)


def resolve_trusted_keys(flag: str | Path | None = None, configured: str | Path | None = None) -> Path | None:
    """The folder to trust: the flag, else the config key, else the provisioned default when it
    holds at least one *.pub; None means signatures are not checked (unsigned bundles load).

    A folder named by flag or config must exist and hold keys (a typo must not switch checking
    off). The default folder only starts enforcing once a key is put in it, so provisioning can
    create it empty; that state is logged, since it means bundles are not signature-checked."""
    if flag is not None:
        return Path(flag)
    if configured is not None:
        return Path(configured)
    if DEFAULT_TRUSTED_KEYS.is_dir():
        if any(DEFAULT_TRUSTED_KEYS.glob("*.pub")):
            return DEFAULT_TRUSTED_KEYS
        log.warning("%s holds no *.pub keys: bundle signatures are not checked", DEFAULT_TRUSTED_KEYS)
    return None


def device_files(manifest: Any) -> set[str]:
    """Files the device adds after signing: each engine and its calibration cache."""
    return {name for e in manifest.engines for name in (e.file, e.calibration_cache) if name}


def signed_payload(manifest: Any) -> bytes:
    """The canonical bytes of the desktop part of `manifest` (see the module docstring)."""
    data = _canonical(manifest)
    data.pop("engines", None)
    files = dict(data.get("files", {}))
    for name in device_files(manifest):
        files.pop(name, None)
    data["files"] = files
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
            "ascii"
        )
    except ValueError as exc:
        raise BundleError(f"manifest cannot be signed: {exc}") from None


def _canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
                continue
            out[f.name] = _canonical(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass(frozen=True)
class SignatureRecord:
    """What `signature.json` holds: the signer's key id, the raw signature, and the sha256 of the signed payload."""

    key_id: str
    signature: bytes
    payload_sha256: str
    signed_at: str = ""


def read_signature(root: str | Path) -> SignatureRecord | None:
    """The bundle's signature.json, or None when the bundle is unsigned."""
    p = Path(root) / SIGNATURE
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_bytes())
        if data.get("schema") != SIGNATURE_SCHEMA or data.get("algorithm") != ALGORITHM:
            raise ValueError(f"not an {ALGORITHM} {SIGNATURE_SCHEMA} record")
        if not re.fullmatch(r"[0-9a-f]{16}", str(data.get("key_id", ""))):
            raise ValueError("key_id is not 16 hex digits")  # it is echoed in messages: keep them one line
        return SignatureRecord(
            key_id=str(data["key_id"]),
            signature=base64.b64decode(data["signature"], validate=True),
            payload_sha256=str(data.get("payload_sha256", "")),
            signed_at=str(data.get("signed_at", "")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(
            f"bundle {Path(root)}: unreadable {SIGNATURE} ({first_line(exc)}); refusing to load"
        ) from None


def sign_bundle(bundle: Bundle, private_key_path: str | Path) -> SignatureRecord:
    """Write signature.json over a loaded bundle's desktop part.

    The caller loads it with `load_bundle(root)` (hashes verified: never sign files that do not
    match them); taking the loaded bundle keeps this module below `edge_runtime.bundle`, which
    calls it to check signatures, with no import cycle.

    Args:
        bundle: the loaded, hash-verified bundle; its `signature.json` is replaced atomically.
        private_key_path: the PEM key from `generate_keypair`.

    Returns:
        The record written.

    Raises:
        ConfigError: the key cannot be loaded.
        BundleError: the signature file cannot be written.
    """
    key = load_private_key(private_key_path)
    payload = signed_payload(bundle.manifest)
    record = SignatureRecord(
        key_id=key_id(key.public_key()),
        signature=key.sign(DOMAIN + payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        signed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    doc = {
        "schema": SIGNATURE_SCHEMA,
        "version": 1,
        "algorithm": ALGORITHM,
        "key_id": record.key_id,
        "signed": SIGNED_PART,
        "payload_sha256": record.payload_sha256,
        "signature": base64.b64encode(record.signature).decode("ascii"),
        "signed_at": record.signed_at,
    }
    tmp = bundle.root / f".{SIGNATURE}.tmp"
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, bundle.root / SIGNATURE)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"bundle {bundle.root}: cannot write {SIGNATURE}: {first_line(exc)}") from None
    return record


def verify_signature(root: Path, manifest: Any, trusted: TrustedKeys) -> str:
    """Check `manifest` (already parsed) against the bundle's signature; return the key id.

    Args:
        root: the bundle folder holding `signature.json`.
        manifest: the parsed manifest; only its desktop part is compared.
        trusted: the keys this station accepts.

    Returns:
        The id of the trusted key that signed it.

    Raises:
        BundleError: unsigned, signed by an untrusted key, a signature that does not match
            (edited after signing), or an engine whose source ONNX is not a signed file.
    """
    from cryptography.exceptions import InvalidSignature

    record = read_signature(root)
    if record is None:
        raise BundleError(
            f"bundle {root} is not signed (no {SIGNATURE}) but trusted keys are configured ({trusted.folder}); sign it with 'clipinspect sign'"
        )
    key = trusted.keys.get(record.key_id)
    if key is None:
        raise BundleError(
            f"bundle {root} is signed by key {record.key_id}, which is not among the trusted keys in {trusted.folder}"
        )
    payload = signed_payload(manifest)
    try:
        key.verify(record.signature, DOMAIN + payload)
    except InvalidSignature:
        raise BundleError(
            f"bundle {root}: signature by key {record.key_id} does not match the manifest (edited after signing); refusing to load"
        ) from None
    signed = {n for n in manifest.files if n not in device_files(manifest)}
    for e in manifest.engines:
        if e.source_onnx not in signed:
            raise BundleError(
                f"bundle {root} (signed by key {record.key_id}): engine {e.file} claims a source ONNX '{e.source_onnx}' that is not a signed file"
            )
    return record.key_id


def describe_signer(root: str | Path) -> str:
    """One phrase for doctor: who signed the bundle (not a verification by itself)."""
    try:
        record = read_signature(root)
    except BundleError as exc:
        return str(exc)
    if record is None:
        return "unsigned"
    return f"signed by key {record.key_id}" + (f" at {record.signed_at}" if record.signed_at else "")
