"""The bundle contract (read side, plus the writer helpers export uses).

A bundle is a folder: `manifest.json`, `model.onnx`, `text_embeddings.npy`, optional
variants (e.g. `model.int8.onnx`), optional calibration cache and engines built on the
target. The runtime trusts nothing but the manifest: every file listed is sha256-checked,
a newer schema is refused, and engines carry the TensorRT version and GPU they were built for.

Signing (edge_runtime/signing.py): `signature.json` beside the manifest signs the manifest's
desktop part, i.e. everything except `engines` and the `files` entries those engines name.
Those are the device additions (`build-engine` writes them on the target after signing); they
stay sha256-checked but unsigned. When trusted keys are configured, `load_bundle` refuses an
unsigned bundle, a signature that does not match, or an unknown key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edge_runtime.config import from_mapping, to_dict
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.preprocess import CLIP_MEAN, CLIP_STD

SCHEMA = "clipinspect.bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the manifest records it; backends bind buffers by it."""

    name: str
    shape: tuple[int | str, ...]  # a str dimension is dynamic ("batch")
    dtype: str  # numpy dtype name: 'uint8', 'float32', 'float16'
    meaning: str = ""


@dataclass(frozen=True)
class PreprocessSpec:
    """How a camera image becomes the `image` input. Normalisation by mean/std happens inside
    the graph when `input_layout` is 'NHWC_uint8' (the default), outside for 'NCHW_float32'."""

    image_size: tuple[int, int]  # (height, width) the model sees
    color_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    input_layout: Literal["NHWC_uint8", "NCHW_float32", "frame_uint8"] = "NHWC_uint8"
    resize: Literal["area", "linear", "cubic"] = "area"
    # Raw-frame bundles (input_layout 'frame_uint8'): the graph input is the camera's frame as
    # delivered and ROI, demosaic, resize and normalisation run inside the graph
    # (edge_runtime.rawframe). Empty/None for model-size image bundles.
    input_format: str = ""  # 'bayer_rg8', 'rgb8', 'mono8', ... (edge_runtime.rawframe.FORMATS)
    input_size: tuple[int, int] | None = None  # (height, width) of the frame
    roi: tuple[int, int, int, int] | None = None  # (x, y, width, height) in frame pixels

    def __post_init__(self) -> None:
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ConfigError(f"preprocess.image_size must be (height, width) >= 8, got {self.image_size}")
        if any(s <= 0 for s in self.std):
            raise ConfigError("preprocess.std must be positive")
        raw = self.input_layout == "frame_uint8"
        if raw != bool(self.input_format) or raw != (self.input_size is not None):
            raise ConfigError(
                "preprocess: input_layout 'frame_uint8' goes with input_format and input_size, and only with them"
            )
        if self.roi is not None and not raw:
            raise ConfigError("preprocess.roi is recorded only for raw-frame bundles (input_layout 'frame_uint8')")
        if raw:
            from edge_runtime.rawframe import make_plan

            make_plan(
                self.input_format, self.input_size, self.image_size, self.roi
            )  # format, size and ROI are consistent

    @property
    def raw_frame(self) -> bool:
        """True for a raw-frame bundle: the graph takes the camera frame and preprocesses inside."""
        return self.input_layout == "frame_uint8"


@dataclass(frozen=True)
class Threshold:
    """The NG decision line (score >= value) and where it came from.

    The lineage fields say which epoch's scores and which images chose the value and what
    error rates it implies on them, so a station can tell a tuned threshold from a guess.
    """

    value: float
    method: str  # how it was chosen, e.g. "f1-max on eval of run X (category bottle)"
    source: str = ""
    # Lineage of the value (defaults keep older manifests loadable): which epoch's scores and
    # which images chose it, and the error rates it implies on them.
    epoch: int | None = None  # training epoch (None: not chosen during training, e.g. enroll)
    images: int = 0  # how many images chose it
    data_sha256: str = ""  # edge_runtime.digest.image_set_sha256 of those images
    frr: float | None = None  # false-reject rate implied (enroll: the certified upper bound)
    # Rates with "NG" as the decision: frr = good parts rejected (the FPR when anomalous is the
    # positive class), far = defects accepted (the FNR). None: that class was absent.
    far: float | None = None  # false-accept rate on those images (None: no defects among them)
    confidence: float | None = None  # confidence of the frr bound (enroll)


@dataclass(frozen=True)
class TextSpec:
    """The prompt pair and where their embeddings live (a .npy file, or baked into the graph)."""

    prompts: Mapping[str, str]  # {"normal": "...", "abnormal": "..."} (templates as used)
    embeddings_file: str | None = "text_embeddings.npy"  # None when baked into the graph
    baked: bool = False


@dataclass(frozen=True)
class FileEntry:
    """The sha256 and size that `verify_files` compares a bundle file against."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelVariant:
    """An ONNX file to run: the FP32 export or an INT8 Q/DQ variant from calibration."""

    file: str
    precision: Literal["fp32", "fp16", "int8"]
    quantization: str = ""  # e.g. "ort static QDQ, per-channel, MatMul/Gemm"
    calibration_set_sha256: str = ""
    notes: str = ""


@dataclass(frozen=True)
class EngineEntry:
    """A TensorRT engine built ON the target. Not portable across TensorRT versions or GPUs."""

    file: str
    precision: Literal["fp16", "int8", "fp32"]
    source_onnx: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    build_flags: tuple[str, ...] = ()
    workspace_mb: int = 0
    calibration_cache: str = ""
    calibration_cache_sha256: str = ""
    calibration_set_sha256: str = ""
    built_at: str = ""


@dataclass(frozen=True)
class FewShotSpec:
    """The few-shot memory bank of a graph with a `memory_bank` input (edge_runtime.fewshot).

    `bank_file` is None until a station enrols good images; the runtime then feeds zeros,
    which the graph turns into exactly the zero-shot result."""

    max_shots: int  # the bank input holds max_shots * patches rows
    patches: int  # patches per image (the map grid's h * w)
    layers: int
    dim: int
    bank_file: str | None = None
    shots: int = 0
    images_sha256: str = ""  # sha256 over the enrolled images' file sha256s, in enrolment order
    images: tuple[str, ...] = ()  # their file names, for the record
    method: str = (
        "WinCLIP+-style: per layer 0.5*(1 - max cosine to bank), mean over layers; map = mean(zero-shot, few-shot)"
    )
    enrolled_at: str = ""


@dataclass(frozen=True)
class Manifest:
    """The parsed, validated `manifest.json`: the whole contract between desktop and device.

    Built by `parse_manifest` (unknown keys and bad types raise), never by hand-reading the
    JSON, so every reader agrees on defaults. Fields added later carry defaults so older
    manifests stay loadable; a newer `schema_version` is refused.

    Raises:
        ConfigError: `schema` is not "clipinspect.bundle".
    """

    schema: str
    schema_version: int
    model_id: str
    clip_source: str
    preprocess: PreprocessSpec
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    threshold: Threshold
    text: TextSpec
    files: Mapping[str, FileEntry]
    model_file: str = "model.onnx"
    opset: int = 17
    versions: Mapping[str, str] = field(default_factory=dict)
    variants: tuple[ModelVariant, ...] = ()
    engines: tuple[EngineEntry, ...] = ()
    created: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Where the model came from: training run id, epoch, data manifest digests (train/val),
    # enrollment records. Informational; the runtime does not act on it.
    lineage: Mapping[str, Any] = field(default_factory=dict)
    fewshot: FewShotSpec | None = None
    input_profile: str | None = None  # file with the good images' input statistics (edge_runtime.input_alarm)

    def __post_init__(self) -> None:
        if self.schema != SCHEMA:
            raise ConfigError(f"not a clipinspect bundle manifest (schema {self.schema!r})")

    def input(self, name: str) -> TensorSpec:
        """The graph input called `name`; BundleError when the manifest lists none."""
        return _by_name(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        """The graph output called `name`; BundleError when the manifest lists none."""
        return _by_name(self.outputs, name, "output")

    def to_json(self) -> str:
        """The manifest as `manifest.json` text (every field, in declaration order)."""
        return json.dumps(to_dict(self), indent=2, sort_keys=False) + "\n"


def _by_name(specs: tuple[TensorSpec, ...], name: str, what: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise BundleError(f"bundle has no {what} named '{name}'")


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its folder, parsed manifest and the manifest's sha256.

    This is what every consumer on the device receives (backends, the pipeline, enroll, the
    status record). Get one from `load_bundle`, which has already checked the hashes (and the
    signature when keys are trusted); constructing it directly skips those checks.

    Attributes:
        root: the bundle folder; file names in the manifest are relative to it.
        manifest: the validated contract (see `Manifest`).
        manifest_sha256: sha256 of the manifest bytes on disk; identifies the bundle in
            every verdict and status record.
    """

    root: Path
    manifest: Manifest
    manifest_sha256: str  # identifies the bundle in every verdict

    def path(self, name: str) -> Path:
        """The absolute path of bundle file `name` (no existence or hash check)."""
        return self.root / name

    def model_path(self, precision: str = "fp32") -> Path:
        """The ONNX file for `precision` ('fp32' = the export; others must be a listed variant).

        Raises:
            BundleError: the bundle has no variant of that precision.
        """
        if precision == "fp32":
            return self.path(self.manifest.model_file)
        for v in self.manifest.variants:
            if v.precision == precision:
                return self.path(v.file)
        have = ["fp32"] + [v.precision for v in self.manifest.variants]
        raise BundleError(
            f"bundle {self.root} has no {precision} ONNX model (has: {', '.join(have)}); run 'clipinspect calibrate' for int8"
        )

    def text_embeddings(self):
        """The [2, D] float32 text embeddings (row 0 normal, row 1 abnormal), or None if baked."""
        import numpy as np

        if self.manifest.text.baked or not self.manifest.text.embeddings_file:
            return None
        arr = np.load(self.path(self.manifest.text.embeddings_file), allow_pickle=False)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def memory_bank(self):
        """What to feed the graph's `memory_bank` input: the enrolled bank [L, M, D] float32,
        zeros of that shape when nothing is enrolled, None when the graph has no such input.

        Raises:
            BundleError: the bank file's shape or dtype differs from the manifest's.
        """
        import numpy as np

        spec = self.manifest.fewshot
        if spec is None:
            return None
        shape = (spec.layers, spec.max_shots * spec.patches, spec.dim)
        if not spec.bank_file:
            return np.zeros(shape, np.float32)
        arr = np.load(self.path(spec.bank_file), allow_pickle=False)
        if arr.shape != shape or arr.dtype != np.float32:
            raise BundleError(
                f"{self.path(spec.bank_file)}: memory bank is {arr.dtype} {list(arr.shape)}, the manifest says float32 {list(shape)}"
            )
        return np.ascontiguousarray(arr)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in `chunk`-byte blocks so engines never sit whole in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def calibration_set_sha256(file_sha256s: list[str] | tuple[str, ...]) -> str:
    """The one definition of a calibration set's identity, recorded in variants and engines:
    sha256 over the image files' sha256s in calibration order (order changes what a
    histogram calibrator sees, so a reordered set is another set; file names do not count)."""
    h = hashlib.sha256()
    for digest in file_sha256s:
        h.update(digest.encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()


def file_entry(path: str | Path) -> FileEntry:
    """The manifest `files` entry (sha256 and size) for the file at `path`."""
    return FileEntry(sha256=sha256_file(path), bytes=os.path.getsize(path))


def parse_manifest(data: Mapping[str, Any], where: str = MANIFEST) -> Manifest:
    """Validate manifest JSON into a `Manifest`.

    Args:
        data: the decoded `manifest.json`.
        where: what to name in error messages (usually the manifest's path).

    Returns:
        The frozen manifest, with defaults filled in for fields older schemas lack.

    Raises:
        BundleError: not an object, a missing/bad or newer `schema_version`, an unknown
            key or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise BundleError(f"{where}: not a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise BundleError(f"{where}: missing or bad schema_version")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{where}: bundle schema version {version} is newer than this runtime supports ({SCHEMA_VERSION}); upgrade clipinspect on the device"
        )
    try:
        return from_mapping(Manifest, data)
    except ConfigError as exc:
        raise BundleError(f"{where}: {exc}") from None


def load_bundle(root: str | Path, verify: bool = True, trusted_keys: str | Path | Any | None = None) -> Bundle:
    """Read and validate a bundle. With `verify`, every listed file must exist and match its sha256.

    With `trusted_keys` (a folder of public keys, or a loaded `signing.TrustedKeys`), the
    manifest's desktop part must carry a valid signature by one of them, and the file hashes
    are always checked (a signature over hashes nobody compares would mean nothing). See
    edge_runtime/signing.py for what is signed and what the device may add afterwards.

    Args:
        root: the bundle folder.
        verify: check every listed file's size and sha256 (reading them all); False only
            for tools that inspect a manifest, never to run a model.
        trusted_keys: a folder of `*.pub` keys or a `signing.TrustedKeys`; None checks no
            signature.

    Returns:
        The loaded `Bundle`.

    Raises:
        BundleError: no folder or manifest, invalid JSON or schema, a referenced file
            without a hash entry, a file that does not match its hash, or (with trusted
            keys) a missing, invalid or untrusted signature.
    """
    root = Path(root)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle folder not found: {root}")
    if not mpath.is_file():
        raise BundleError(f"{root} is not a bundle: no {MANIFEST}")
    raw = mpath.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: invalid JSON ({exc})") from None
    manifest = parse_manifest(data, str(mpath))
    bundle = Bundle(root=root, manifest=manifest, manifest_sha256=hashlib.sha256(raw).hexdigest())
    _check_references(bundle)
    if trusted_keys is not None:
        _verify_signed(bundle, trusted_keys)
    elif verify:
        verify_files(bundle)
    return bundle


def _verify_signed(bundle: Bundle, trusted_keys: Any) -> None:
    from edge_runtime import signing

    trusted = trusted_keys if isinstance(trusted_keys, signing.TrustedKeys) else signing.load_trusted_keys(trusted_keys)
    kid = signing.verify_signature(bundle.root, bundle.manifest, trusted)
    try:
        verify_files(bundle)
    except BundleError as exc:
        raise BundleError(f"bundle {bundle.root} (signed by key {kid}): {exc}") from None
    import logging

    logging.getLogger(__name__).info(
        "bundle %s: signature by trusted key %s (%s) verified", bundle.root, kid, trusted.folder
    )


def _check_references(bundle: Bundle) -> None:
    m = bundle.manifest
    needed = [m.model_file] + [v.file for v in m.variants] + [e.file for e in m.engines]
    if m.text.embeddings_file and not m.text.baked:
        needed.append(m.text.embeddings_file)
    if m.fewshot is not None and m.fewshot.bank_file:
        needed.append(m.fewshot.bank_file)
    if m.input_profile:
        needed.append(m.input_profile)
    for name in needed:
        if name not in m.files:
            raise BundleError(f"{bundle.root / MANIFEST}: '{name}' is referenced but has no sha256 entry in 'files'")


def verify_files(bundle: Bundle) -> None:
    """Check that every file the manifest lists exists inside the bundle and matches its size and sha256.

    Raises:
        BundleError: a name escapes the folder, a file is missing, or its size or hash differ.
    """
    for name, entry in bundle.manifest.files.items():
        p = bundle.root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"bundle file name {name!r} escapes the bundle folder")
        if not p.is_file():
            raise BundleError(f"bundle file missing: {p}")
        size = p.stat().st_size
        if size != entry.bytes or sha256_file(p) != entry.sha256:
            raise BundleError(
                f"bundle file {p} does not match its sha256 in the manifest (edited or corrupted); refusing to load"
            )


def write_manifest(root: str | Path, manifest: Manifest) -> Path:
    """Write `manifest` as `root/manifest.json` atomically (temp file + rename), so a crash never leaves half a manifest.

    Returns:
        The manifest's path.
    """
    root = Path(root)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".manifest.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
    os.replace(tmp, root / MANIFEST)
    return root / MANIFEST


def with_file(manifest: Manifest, root: str | Path, name: str) -> Manifest:
    """Manifest with `name` (a file inside `root`) hashed into `files`.

    Args:
        manifest: the manifest to extend; it is frozen, so a copy is returned.
        root: the bundle (or staging) folder holding the file.
        name: the file's name relative to `root`, as the manifest will list it.

    Returns:
        A new manifest whose `files` also holds `name` (replacing an older entry).
    """
    files = dict(manifest.files)
    files[name] = file_entry(Path(root) / name)
    return replace(manifest, files=files)


def main(argv: list[str] | None = None) -> int:
    """`python -m edge_runtime.bundle DIR [--trusted-keys KEYS]`: verify a bundle's manifest and
    hashes, and its signature when trusted keys are given or provisioned (used by
    deploy/jetson/rollout.sh on the target, where only the edge runtime is installed)."""
    import argparse
    import sys

    from edge_runtime.errors import ClipInspectError

    p = argparse.ArgumentParser(
        prog="python -m edge_runtime.bundle", description="verify a bundle's hashes (and signature)"
    )
    p.add_argument("bundle", help="bundle folder")
    p.add_argument(
        "--trusted-keys",
        default=None,
        metavar="DIR",
        help="folder of trusted *.pub keys (default /etc/clipinspect/trusted_keys when it holds keys)",
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from edge_runtime.signing import describe_signer, resolve_trusted_keys

    trusted = resolve_trusted_keys(args.trusted_keys)
    try:
        bundle = load_bundle(args.bundle, trusted_keys=trusted)
    except ClipInspectError as exc:
        print(f"bundle check failed: {exc}", file=sys.stderr)
        return 2
    signer = describe_signer(bundle.root) + (
        f" (trusted, {trusted})" if trusted else " (signature not checked: no trusted keys)"
    )
    print(f"ok {bundle.manifest_sha256} {bundle.manifest.model_id} {signer}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
