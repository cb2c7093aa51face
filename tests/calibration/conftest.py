"""Fixtures for the calibration tests: a contract-conforming tiny ONNX bundle (no train/export needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.calibration.contract_model import write_contract_bundle


@pytest.fixture(scope="session")
def contract_bundle_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    return write_contract_bundle(tmp_path_factory.mktemp("contract") / "bundle")


@pytest.fixture()
def contract_bundle(contract_bundle_src: Path, tmp_path: Path) -> Path:
    """A fresh copy per test: calibration writes into the bundle."""
    return Path(shutil.copytree(contract_bundle_src, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def bottle(mvtec_root: Path) -> Path:
    return mvtec_root / "bottle"
