"""A test-only backend row: the device's OrtBackend with every score moved by +0.5.

Registered in a test with one `Entry`; verify-bundle and precision-report must pick it up by
name (they build candidates from the registry) and see the shift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from edge_runtime.backends.base import Outputs
from edge_runtime.backends.onnxruntime import OrtBackend

SHIFT = 0.5


class ShiftedOrt(OrtBackend):
    """ort-cpu, with `SHIFT` added to each score."""

    @classmethod
    def create(cls, name: str, **options: Any) -> ShiftedOrt:
        """An ort-cpu backend that calls itself `name`."""
        backend = super().create("ort-cpu", **options)
        backend.name = name
        return backend

    def _infer_impl(self, batch: Any) -> Outputs:
        out = super()._infer_impl(batch)
        return replace(out, score=out.score + SHIFT)

    def _describe_impl(self) -> Mapping[str, Any]:
        return {**super()._describe_impl(), "backend": self.name}


def register(monkeypatch: Any, name: str = "test-shift") -> str:
    """Add the `name` row to the backend table for one test (monkeypatch undoes it)."""
    from edge_runtime.backends import BACKENDS
    from edge_runtime.registry import Entry

    monkeypatch.setattr(BACKENDS, "_rows", dict(BACKENDS._rows))
    monkeypatch.setattr(BACKENDS, "entries", BACKENDS.entries)
    BACKENDS.register(Entry(name, "tests.backends.shifted:ShiftedOrt", summary="ort-cpu + 0.5 (tests only)"))
    return name
