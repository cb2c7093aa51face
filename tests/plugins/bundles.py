"""Fixtures for the bundles area (owned by that area's tests)."""
