"""A registry row for the test-only backend, removed again after the test."""

from __future__ import annotations

import pytest

from edge_runtime.backends import BACKENDS
from edge_runtime.registry import Entry


@pytest.fixture
def shifted_backend(monkeypatch):
    """Register `test-shift` (tests.backends.shifted:ShiftedOrt) for one test."""
    monkeypatch.setattr(BACKENDS, "_rows", dict(BACKENDS._rows))
    monkeypatch.setattr(BACKENDS, "entries", BACKENDS.entries)
    BACKENDS.register(Entry("test-shift", "tests.backends.shifted:ShiftedOrt", summary="ort-cpu + 0.5 (tests only)"))
    return "test-shift"
