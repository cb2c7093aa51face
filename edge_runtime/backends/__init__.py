"""Inference backends behind the Backend seam, picked by name.

Built in: `ort-cpu`, `ort-cuda`, `ort-trt` (ONNX Runtime, one provider each) and `trt`
(native TensorRT, imported lazily). Others come from the `clipinspect.backends` entry-point
group (e.g. `torch` from the desktop export package), loaded only when asked for so that
edge_runtime never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from edge_runtime.backends.base import Backend, Outputs
from edge_runtime.errors import BackendUnavailable, ConfigError, MissingDependency

ENTRY_POINT_GROUP = "clipinspect.backends"
ORT_BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt")
BUILTIN = ORT_BACKENDS + ("trt",)

__all__ = ["Backend", "Outputs", "BackendInfo", "make_backend", "available_backends", "backend_names"]


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    detail: str


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}


def backend_names() -> list[str]:
    return list(BUILTIN) + sorted(_entry_points())


def make_backend(name: str, **options: Any) -> Backend:
    """A not-yet-loaded backend. `options` go to ONNX Runtime backends (`intra_op_threads`,
    `allow_spinning`, `provider_options`, `trt_cache_dir`); other backends take none."""
    if name in ORT_BACKENDS:
        from edge_runtime.backends.onnxruntime import OrtBackend, PROVIDERS, provider_available

        if not provider_available(PROVIDERS[name]):
            import onnxruntime as ort

            raise BackendUnavailable(f"backend {name} ({PROVIDERS[name]}) is not available; available providers: {', '.join(ort.get_available_providers())}")
        return OrtBackend(name, **options)
    if options:
        raise ConfigError(f"backend {name} takes no options (got {', '.join(sorted(options))})")
    if name == "trt":
        try:
            module = importlib.import_module("edge_runtime.trt.runtime")
            cls = getattr(module, "TrtBackend")
        except (ImportError, AttributeError) as exc:
            raise BackendUnavailable(f"backend trt cannot be loaded: {exc}") from None
        return cls()
    eps = _entry_points()
    if name not in eps:
        raise ConfigError(f"unknown backend '{name}' (known: {', '.join(backend_names())})")
    try:
        cls = eps[name].load()
    except MissingDependency as exc:
        raise BackendUnavailable(f"backend {name} cannot be loaded: {exc}") from None
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name} ({eps[name].value}) cannot be loaded: {exc}") from None
    return cls()


def available_backends() -> list[BackendInfo]:
    """What could run here, without loading heavy modules (no torch import, no session)."""
    out: list[BackendInfo] = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        ort_detail = f"onnxruntime {ort.__version__}"
    except ImportError as exc:
        providers, ort_detail = [], f"onnxruntime not importable ({exc})"
    from edge_runtime.backends.onnxruntime import PROVIDERS

    for name in ORT_BACKENDS:
        ok = PROVIDERS[name] in providers
        out.append(BackendInfo(name, ok, f"{PROVIDERS[name]} {'available' if ok else 'not in this build'} ({ort_detail})"))
    missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
    out.append(BackendInfo("trt", not missing, "tensorrt + pycuda importable" if not missing else f"missing: {', '.join(missing)}"))
    for name, ep in sorted(_entry_points().items()):
        top = ep.value.split(":")[0].split(".")[0]
        ok = importlib.util.find_spec(top) is not None
        out.append(BackendInfo(name, ok, f"entry point {ep.value}" + ("" if ok else f" (package {top} not installed)")))
    return out
