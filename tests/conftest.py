"""Shared test setup. Fixtures live in tests/plugins/<area>.py, one file per area owner."""

from __future__ import annotations

pytest_plugins = [
    "tests.plugins.paths",
    "tests.plugins.models",
    "tests.plugins.bundles",
    "tests.plugins.broker",
    "tests.plugins.edge",
]
