"""The device's runtime config (/etc/clipinspect/config.yaml): one frozen dataclass per section.

```yaml
bundle: {path: /opt/clipinspect/bundle, verify: true}
source: {uri: "spinnaker://12345678", options: {exposure_us: 2000, buffer_handling: NewestOnly}}
backend: {name: trt, precision: fp16, intra_op_threads: 0}
publish: {uri: "mqtt://broker:1883/line1", options: {qos: 1, spool_dir: /var/spool/clipinspect}}
pipeline: {inference_queue: 2, drop_policy: newest, publish_queue: 256, stats_interval_s: 10}
preprocess: {roi: [0, 0, 1024, 1024]}
heatmaps: {dir: /var/lib/clipinspect/heatmaps, max_files: 500, only_ng: true}
threshold: null   # null = the bundle's threshold
```
Command-line flags override `--set key.sub=value`, which overrides the file.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from edge_runtime.backends import BACKENDS
from edge_runtime.config import apply_overrides, from_mapping, load_yaml, set_key
from edge_runtime.errors import ConfigError
from edge_runtime.pipeline import PipelineOptions
from edge_runtime.postprocess import HeatmapOptions
from edge_runtime.preprocess import Roi
from edge_runtime.publish.options import PublishOptions
from edge_runtime.sources.options import SourceOptions


@dataclass(frozen=True)
class BundleSection:
    """`bundle:` which bundle to run and how much to trust it (hashes, signature keys)."""

    path: Path | None = None
    verify: bool = True  # sha256 of every file at start-up
    # Folder of trusted ed25519 public keys (*.pub). When set (or when /etc/clipinspect/trusted_keys
    # exists), only bundles signed by one of them load; see edge_runtime/signing.py.
    trusted_keys: Path | None = None


@dataclass(frozen=True)
class SourceSection:
    """`source:` the camera URI (the scheme picks the FrameSource) and its options."""

    uri: str = ""
    options: SourceOptions = field(default_factory=SourceOptions)


@dataclass(frozen=True)
class BackendSection:
    """`backend:` which Backend runs the model, at which precision, and ONNX Runtime's threading.

    Raises:
        ConfigError: `intra_op_threads` below 0.
    """

    name: str = "ort-cpu"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    intra_op_threads: int = 0  # ONNX Runtime only; 0 = its default (one per core)
    allow_spinning: bool = True  # ONNX Runtime only; False frees cores between runs

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0:
            raise ConfigError(f"backend.intra_op_threads must be >= 0, got {self.intra_op_threads}")

    def options(self) -> dict[str, Any]:
        """Constructor options for make_backend, as the backend's registry row declares them.

        The section's tuning fields (all but name and precision) that the row's options type
        has are passed; a backend whose row has no options type gets none. Built in, only the
        ONNX Runtime rows (`OrtOptions`) take any; a plug-in row with an options type gets the
        fields it declares in the same way.

        Returns:
            Keyword options for `make_backend(name, **options)`.

        Raises:
            ConfigError: `name` is not a registered backend.
        """
        kind = BACKENDS.options_type(self.name)
        if kind is None:
            return {}
        takes = {f.name for f in fields(kind)} if is_dataclass(kind) else set(inspect.signature(kind).parameters)
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("name", "precision") and f.name in takes
        }


@dataclass(frozen=True)
class PublishSection:
    """`publish:` where verdicts go (the scheme picks the Publisher) and its options."""

    uri: str = "stdout://"
    options: PublishOptions = field(default_factory=PublishOptions)


@dataclass(frozen=True)
class PreprocessSection:
    """`preprocess:` the device's software ROI; everything else about preprocessing comes from the bundle."""

    roi: tuple[int, int, int, int] | None = None  # software ROI (x, y, width, height) before resizing

    def roi_obj(self) -> Roi | None:
        """The ROI as a `Roi`, or None for the whole frame."""
        return Roi.parse(self.roi) if self.roi is not None else None


@dataclass(frozen=True)
class RuntimeConfig:
    """The whole runtime config, one frozen section per YAML key (see the module docstring).

    Build it with `load_runtime_config`; unknown keys and bad types raise ConfigError there.

    Raises:
        ConfigError: a threshold override outside [0, 1].
    """

    bundle: BundleSection = field(default_factory=BundleSection)
    source: SourceSection = field(default_factory=SourceSection)
    backend: BackendSection = field(default_factory=BackendSection)
    publish: PublishSection = field(default_factory=PublishSection)
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    preprocess: PreprocessSection = field(default_factory=PreprocessSection)
    heatmaps: HeatmapOptions = field(default_factory=HeatmapOptions)
    threshold: float | None = None  # overrides the bundle's threshold
    station: str | None = None  # name in the status topic and fleet view; None = host name

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1] (scores are probabilities), got {self.threshold}")


def load_runtime_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> RuntimeConfig:
    """File < `--set` overrides < explicit flags (dotted keys, None values ignored).

    Args:
        path: the YAML file, or None for defaults only.
        overrides: `--set key.sub=value` strings.
        flags: command-line values by dotted key (e.g. {"source.uri": ...}); None means
            "not given", so a flag never overwrites the file with an absent value.

    Returns:
        The validated, frozen config.

    Raises:
        ConfigError: an unreadable file, an unknown key, a bad type or value.
    """
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides)
    for key, value in (flags or {}).items():
        if value is not None:
            set_key(data, key, str(value) if isinstance(value, Path) else value)
    return from_mapping(RuntimeConfig, data)
