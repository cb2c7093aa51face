"""A registry row for the test-only backend, removed again after the test."""

from __future__ import annotations

import pytest

from tests.backends import shifted


@pytest.fixture
def shifted_backend(monkeypatch):
    """Register `test-shift` (tests.backends.shifted:ShiftedOrt) for one test."""
    return shifted.register(monkeypatch)
