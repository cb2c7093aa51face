"""Fixtures shared by the camera-source tests."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def pyspin(monkeypatch):
    """The PySpin stand-in (tests/fakes/PySpin.py), imported fresh and reset; gone again after the test."""
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("PySpin", None)
    module = importlib.import_module("PySpin")
    assert module.__file__ and Path(module.__file__).parent == FAKES
    module.fake_reset()
    yield module
    sys.modules.pop("PySpin", None)
