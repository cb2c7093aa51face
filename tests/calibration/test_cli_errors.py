"""Bad input to calibrate / precision-report: exit 2 with one line naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.cli import main


def _one_line_error(capsys, rc: int, needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and needle in err[0], err


def test_calibrate_no_images(contract_bundle: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    rc = main(["-q", "calibrate", "--bundle", str(contract_bundle), "--images", str(tmp_path / "empty")])
    _one_line_error(capsys, rc, "no normal images found")


def test_calibrate_too_many_images(contract_bundle: Path, bottle: Path, capsys) -> None:
    rc = main(["-q", "calibrate", "--bundle", str(contract_bundle), "--images", str(bottle), "--num", "500"])
    _one_line_error(capsys, rc, "only 30 normal images")
    assert not (contract_bundle / "model.int8.onnx").exists()


def test_calibrate_missing_bundle(bottle: Path, tmp_path: Path, capsys) -> None:
    rc = main(["-q", "calibrate", "--bundle", str(tmp_path / "nope"), "--images", str(bottle)])
    _one_line_error(capsys, rc, "bundle folder not found")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--op-types", "Softmax"], "op_types"),
        (["--set", "percentile=50"], "percentile"),
        (["--set", "bogus=1"], "unknown config key 'bogus'"),
    ],
)
def test_calibrate_bad_options(contract_bundle: Path, bottle: Path, capsys, extra, needle) -> None:
    rc = main(["-q", "calibrate", "--bundle", str(contract_bundle), "--images", str(bottle), *extra])
    _one_line_error(capsys, rc, needle)


def test_precision_report_errors(contract_bundle: Path, bottle: Path, tmp_path: Path, capsys) -> None:
    rc = main(["-q", "precision-report", "--bundle", str(tmp_path / "nope"), "--images", str(bottle)])
    _one_line_error(capsys, rc, "bundle folder not found")
    rc = main(
        ["-q", "precision-report", "--bundle", str(contract_bundle), "--images", str(bottle), "--precisions", "fp8"]
    )
    _one_line_error(capsys, rc, "--precisions")
    (tmp_path / "flat").mkdir()
    rc = main(["-q", "precision-report", "--bundle", str(contract_bundle), "--images", str(tmp_path / "flat")])
    _one_line_error(capsys, rc, "not an MVTec-style test split")


def test_trt_cache_without_tensorrt_fails_before_quantizing(contract_bundle: Path, bottle: Path, capsys) -> None:
    # TensorRT is never installed on CI; if it is, this test does not apply.
    try:
        import tensorrt  # noqa: F401

        pytest.skip("real TensorRT is installed")
    except ImportError:
        pass
    rc = main(
        ["-q", "calibrate", "--bundle", str(contract_bundle), "--images", str(bottle), "--num", "2", "--trt-cache"]
    )
    _one_line_error(capsys, rc, "tensorrt")
    assert not (contract_bundle / "model.int8.onnx").exists()
