"""Inference backends behind the Backend seam, picked by name from one table, `BACKENDS`.

Built in: `ort-cpu`, `ort-cuda`, `ort-trt` (ONNX Runtime, one provider each) and `trt`
(native TensorRT, imported lazily). Others come from the `clipinspect.backends` entry-point
group (e.g. `torch` from the desktop export package), loaded only when asked for so that
edge_runtime never imports torch. Adding a backend is one module (a `BackendBase` subclass)
plus one `Entry` row below, or one entry point in a plug-in's pyproject.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any

from edge_runtime.backends.base import Backend, BackendBase, BackendNotLoaded, Outputs
from edge_runtime.errors import BackendUnavailable, ConfigError, MissingDependency, first_line
from edge_runtime.registry import Availability, Entry, Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "clipinspect.backends"
_ORT = "edge_runtime.backends.onnxruntime"

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendBase",
    "BackendNotLoaded",
    "Outputs",
    "available_backends",
    "backend_names",
    "make_backend",
]


def _entry_point_rows() -> list[Entry]:
    """Rows for the `clipinspect.backends` entry points (read at lookup time, never imported)."""
    rows = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.count(":") != 1:
            log.warning("backend entry point %s = %r is not 'module:Class'; ignored", ep.name, ep.value)
            continue
        top = ep.value.split(":")[0].split(".")[0]
        rows.append(Entry(ep.name, ep.value, summary=f"entry point {ep.value}", requires=(top,)))
    return rows


BACKENDS = Registry(
    "backend",
    (
        Entry(
            "ort-cpu",
            f"{_ORT}:OrtBackend",
            f"{_ORT}:OrtOptions",
            "ONNX Runtime, CPUExecutionProvider",
            ("onnxruntime",),
        ),
        Entry(
            "ort-cuda",
            f"{_ORT}:OrtBackend",
            f"{_ORT}:OrtOptions",
            "ONNX Runtime, CUDAExecutionProvider",
            ("onnxruntime",),
        ),
        Entry(
            "ort-trt",
            f"{_ORT}:OrtBackend",
            f"{_ORT}:OrtOptions",
            "ONNX Runtime, TensorrtExecutionProvider",
            ("onnxruntime",),
        ),
        Entry(
            "trt",
            "edge_runtime.trt.runtime:TrtBackend",
            "",
            "TensorRT engine built on this device (build-engine)",
            ("tensorrt", "pycuda"),
        ),
    ),
    error=ConfigError,
    extra=_entry_point_rows,
)


def backend_names() -> list[str]:
    """Every backend name: built-ins in table order, then entry-point plug-ins sorted."""
    return BACKENDS.names()


def backend_help(default: str = "ort-cpu") -> str:
    """`--backend` help text naming the registered backends (for run, bench, verify-bundle, ...)."""
    return f"backend: {' | '.join(backend_names())} (default {default})"


def make_backend(name: str, **options: Any) -> Backend:
    """A not-yet-loaded backend, built with its class's `create(name, **options)`.

    Args:
        name: a row of `BACKENDS` (built-in or entry point).
        **options: the row's options (ONNX Runtime: `OrtOptions` fields); others take none.

    Returns:
        The backend; call `load(bundle, precision)` next.

    Raises:
        ConfigError: unknown name, or options the backend does not take.
        BackendUnavailable: its module or provider cannot run here (never substituted).
    """
    entry = BACKENDS.entry(name)
    try:
        cls = BACKENDS.load(name)
    except MissingDependency as exc:
        raise BackendUnavailable(first_line(exc)) from None
    create = getattr(cls, "create", None)
    if create is not None:
        return create(entry.name, **options)
    if options:  # a plug-in class without `create`: built with no arguments
        raise ConfigError(f"backend {entry.name} takes no options (got {', '.join(sorted(options))})")
    return cls()


def available_backends() -> list[Availability]:
    """What could run here, for `doctor`: imports no torch and opens no session.

    ONNX Runtime rows also ask onnxruntime whether their provider is in this build.

    Returns:
        One row per backend, in `backend_names()` order.
    """
    out = []
    for row in BACKENDS.availability():
        if row.available and BACKENDS.entry(row.name).target == f"{_ORT}:OrtBackend":
            from edge_runtime.backends.onnxruntime import provider_report

            row = Availability(row.name, *provider_report(row.name))
        out.append(row)
    return out
