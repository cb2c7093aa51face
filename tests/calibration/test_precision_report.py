from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calibration.precision_report import compare_scores, find_labelled_images, pearson, precision_report
from edge_runtime.bundle import ModelVariant, load_bundle, with_file, write_manifest
from edge_runtime.cli import main


def _row_auroc(labels, scores):
    return compare_scores("fp32", np.asarray(scores, float), np.asarray(scores, float), labels, 0.5).auroc


def test_auroc_is_train_metrics_and_pearson() -> None:
    """The report's AUROC is train.metrics' (checked against scikit-learn there); undefined
    cases become None (shown '-', written null) instead of NaN."""
    from train.metrics import auroc

    rng = np.random.default_rng(3)
    labels, scores = rng.integers(0, 2, 200), np.round(rng.random(200), 2)  # rounded: many ties
    assert _row_auroc(labels, scores) == auroc(labels, scores)
    assert _row_auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert _row_auroc([0, 1], [0.5, 0.5]) == 0.5
    assert _row_auroc([0, 0, 1], [0.1, 0.4, 0.3]) == 0.5
    assert _row_auroc([1, 1], [0.1, 0.2]) is None
    assert _row_auroc([0, 1], [0.1, float("nan")]) is None
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None


def test_metrics_import_no_torch() -> None:
    """calibration and train.metrics stay light: the report's metrics need numpy only."""
    code = "import sys, calibration.precision_report, train.metrics; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compare_scores_counts_verdict_flips() -> None:
    ref = np.array([0.2, 0.45, 0.55, 0.9])
    other = np.array([0.2, 0.52, 0.55, 0.9])  # one image crosses the 0.5 threshold
    row = compare_scores("int8", ref, other, [0, 0, 1, 1], 0.5)
    assert row.max_abs_delta == pytest.approx(0.07)
    assert row.verdict_agreement == pytest.approx(0.75)
    assert row.ng_count == 3
    assert row.auroc == 1.0 and row.auroc_delta == 0.0


def test_labelled_images_from_mvtec(bottle: Path) -> None:
    items = find_labelled_images(bottle)
    assert len(items) == 34 and sum(i.label for i in items) == 24
    assert {i.group for i in items if i.label == 0} == {"good"}
    assert all("test" in i.path.parts for i in items)


def test_report_cli_prints_deltas_and_writes_json(contract_bundle: Path, bottle: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report.json"
    rc = main(
        [
            "-q",
            "precision-report",
            "--bundle",
            str(contract_bundle),
            "--images",
            str(bottle),
            "--max-images",
            "8",
            "--json",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "max|Δscore|" in text and "AUROC" in text
    assert "int8       missing" in text and "clipinspect calibrate" in text  # not calibrated yet
    data = json.loads(out.read_text())
    rows = {r["precision"]: r for r in data["rows"]}
    assert rows["fp32"]["max_abs_delta"] == 0.0 and rows["fp32"]["verdict_agreement"] == 1.0
    assert rows["fp16"]["status"] == "ok" and 0 < rows["fp16"]["max_abs_delta"] < 1e-2
    assert rows["int8"]["status"] == "missing"
    assert len(data["per_image"]) == data["num_images"] == 8
    fp16 = [p["fp16"] for p in data["per_image"]]
    fp32 = [p["fp32"] for p in data["per_image"]]
    assert max(abs(a - b) for a, b in zip(fp16, fp32)) == pytest.approx(rows["fp16"]["max_abs_delta"])


def test_report_after_calibration_has_int8_row(contract_bundle: Path, bottle: Path, capsys) -> None:
    assert main(["-q", "calibrate", "--bundle", str(contract_bundle), "--images", str(bottle), "--num", "3"]) == 0
    report = precision_report(contract_bundle, bottle, precisions=("int8",), max_images=6, progress=False)
    row = report.row("int8")
    assert row.status == "ok" and row.model_file == "model.int8.onnx"
    assert 0 < row.max_abs_delta < 0.05 and row.pearson_r is not None
    assert [r.precision for r in report.rows] == ["fp32", "int8"]


def test_unrunnable_precision_is_na_not_a_crash(contract_bundle: Path, bottle: Path) -> None:
    (contract_bundle / "model.fp16.onnx").write_bytes(b"not an onnx model")
    m = load_bundle(contract_bundle).manifest
    m = replace(m, variants=(ModelVariant(file="model.fp16.onnx", precision="fp16"),))
    write_manifest(contract_bundle, with_file(m, contract_bundle, "model.fp16.onnx"))
    report = precision_report(contract_bundle, bottle, precisions=("fp16",), max_images=2, progress=False)
    row = report.row("fp16")
    assert row.status == "n/a" and "cannot run" in row.reason


def test_report_scores_on_the_registry_backend(contract_bundle: Path, bottle: Path, monkeypatch) -> None:
    """precision-report builds its scorer from the backend table: a registered row is used."""
    from tests.backends import shifted

    name = shifted.register(monkeypatch)
    plain = precision_report(contract_bundle, bottle, precisions=("fp32",), max_images=3, progress=False)
    moved = precision_report(contract_bundle, bottle, precisions=("fp32",), max_images=3, progress=False, backend=name)
    assert plain.backend == "ort-cpu" and moved.backend == name and moved.to_dict()["backend"] == name
    np.testing.assert_allclose(np.array(moved.scores["fp32"]) - plain.scores["fp32"], shifted.SHIFT, atol=1e-6)
