"""Paths to the real sample data in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A git worktree sits one level deeper than the main checkout: CLIPINSPECT_SHARED_DATA points there.
SHARED_DATA = Path(os.environ.get("CLIPINSPECT_SHARED_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mvtec_ad" / "bottle").is_dir():
        pytest.skip(f"sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mvtec_root(shared_data: Path) -> Path:
    """MVTec-layout root holding the real category 'bottle'."""
    return shared_data / "mvtec_ad"


@pytest.fixture(scope="session")
def kolektor_root(shared_data: Path) -> Path:
    """MVTec-layout root holding the real category 'commutator' (KolektorSDD)."""
    return shared_data / "kolektorsdd"
