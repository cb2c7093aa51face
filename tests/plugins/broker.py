"""Fixtures for the broker area (owned by that area's tests)."""
